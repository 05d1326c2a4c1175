-- Calendar attributes known in advance, per day (the platform's macros: its calendar over the US federal holidays).

{{ calendar_days(us_federal_holidays()) }}
