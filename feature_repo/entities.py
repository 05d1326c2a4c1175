"""Entities: the keys features are joined on. Join key = entity name = the column in every feature table."""

from feast import Entity, ValueType

tailnum = Entity(
    name="tailnum",
    join_keys=["tailnum"],
    value_type=ValueType.STRING,
    description="Aircraft tail number, e.g. 'N14228'.",
)

route = Entity(
    name="route",
    join_keys=["route"],
    value_type=ValueType.STRING,
    description="Origin and destination airport codes joined by a dash, e.g. 'EWR-ORD'.",
)

carrier = Entity(
    name="carrier",
    join_keys=["carrier"],
    value_type=ValueType.STRING,
    description="Two-letter carrier code, e.g. 'UA'.",
)

origin = Entity(
    name="origin",
    join_keys=["origin"],
    value_type=ValueType.STRING,
    description="New York departure airport: EWR, JFK or LGA.",
)
