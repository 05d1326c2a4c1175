"""Model evaluation: metrics on a window, and the plots a person looks at (binary: ROC, precision-recall,
calibration; regression: predicted vs actual, residuals; both: feature importance), written as PNG files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # scikit-learn and LightGBM take a second to import: only where a model is evaluated
    import lightgbm as lgb


def metrics(y: np.ndarray, p: np.ndarray, *, regression: bool = False) -> dict[str, float]:
    """Binary: rows, positive rate, ROC AUC, average precision, log loss (both classes present), Brier score.
    Regression: rows, the labels' and predictions' means, RMSE, MAE, R² (labels not all equal)."""
    if regression:
        return _regression_metrics(np.asarray(y, dtype=float), np.asarray(p, dtype=float))
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    y = np.asarray(y).astype(int)
    out = {"rows": int(len(y)), "positive_rate": float(y.mean()) if len(y) else float("nan")}
    if len(np.unique(y)) == 2:
        out |= {
            "roc_auc": float(roc_auc_score(y, p)),
            "average_precision": float(average_precision_score(y, p)),
            "log_loss": float(log_loss(y, np.clip(p, 1e-15, 1 - 1e-15), labels=[0, 1])),
        }
    out["brier"] = float(np.mean((p - y) ** 2)) if len(y) else float("nan")
    return out


def _regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    out = {"rows": int(len(y))}
    if not len(y):
        return out
    out |= {"label_mean": float(y.mean()), "prediction_mean": float(p.mean()),
            "rmse": float(np.sqrt(mean_squared_error(y, p))), "mae": float(mean_absolute_error(y, p))}
    if len(np.unique(y)) > 1:
        out["r2"] = float(r2_score(y, p))
    return out


def write_plots(y: np.ndarray, p: np.ndarray, booster: lgb.Booster, directory: Path, title: str, *,
                regression: bool = False) -> dict[str, Path]:
    """Binary: ROC, precision-recall, calibration; regression: predicted vs actual, residuals by predicted value.
    Both: the top 20 features by gain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def save(name: str, fig) -> None:
        path = directory / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=80)
        plt.close(fig)
        paths[name] = path

    if regression:
        _regression_plots(np.asarray(y, dtype=float), np.asarray(p, dtype=float), plt, save, title)
    else:
        _binary_plots(y, p, plt, save, title)

    gains = booster.feature_importance(importance_type="gain")
    names = np.array(booster.feature_name())
    order = np.argsort(gains)[-20:]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.barh(names[order], gains[order])
    ax.set(xlabel="total gain", title=f"Feature importance — {title}")
    save("feature_importance", fig)
    return paths


def _regression_plots(y: np.ndarray, p: np.ndarray, plt, save, title: str) -> None:
    lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
    m = _regression_metrics(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(y, p, s=6, alpha=0.4)
    ax.plot([lo, hi], [lo, hi], "--", color="grey", label="perfect")
    ax.set(xlabel="actual", ylabel="predicted", title=f"Predicted vs actual — {title}")
    ax.legend(loc="upper left", title=f"RMSE {m['rmse']:.3g}, MAE {m['mae']:.3g}")
    save("predicted_vs_actual", fig)

    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.scatter(p, y - p, s=6, alpha=0.4)
    ax.axhline(0, ls="--", color="grey")
    ax.set(xlabel="predicted", ylabel="actual - predicted", title=f"Residuals — {title}")
    save("residuals", fig)


def _binary_plots(y: np.ndarray, p: np.ndarray, plt, save, title: str) -> None:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, p):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"ROC — {title}")
    ax.legend(loc="lower right")
    save("roc", fig)

    prec, rec, _ = precision_recall_curve(y, p)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(rec, prec, label=f"AP {average_precision_score(y, p):.3f}")
    ax.axhline(y.mean(), ls="--", color="grey", label=f"base rate {y.mean():.3f}")
    ax.set(xlabel="recall", ylabel="precision", title=f"Precision-recall — {title}")
    ax.legend(loc="upper right")
    save("precision_recall", fig)

    frac_pos, mean_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(mean_pred, frac_pos, "o-", label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.set(xlabel="mean predicted probability", ylabel="observed frequency", title=f"Calibration — {title}")
    ax.legend(loc="upper left")
    save("calibration", fig)
