"""`train --kfold K`: the K fits of one recipe in this process, one per validation fold, and their table.

The K-fold estimate is the validation-fold accuracy (mean ± std over folds); the test split is never
used to choose and is reported separately, so a change picked on validation data can be confirmed
on data it was not picked on.
"""

from __future__ import annotations

import logging

from ..recipes import Recipe
from ..train.recipe_kwargs import run_dir_kwargs
from .runner import fold_table, result_metrics


def fit_folds(recipe: Recipe, *, fit, say=None) -> tuple[list[dict], str]:
    """Run ``fit`` on every fold of ``recipe.kfold`` in turn; return the fold records and the table.
    ``say`` gets a line per fold (default: the "sotakit" logger)."""
    say = say or logging.getLogger("sotakit.experiments").info
    name = run_dir_kwargs(recipe)["name"]
    records = []
    for k in range(recipe.kfold):
        say(f"fold {k + 1}/{recipe.kfold}")
        result = fit(recipe.replace(fold=k, run_name=f"{name}-fold{k}"))
        records.append({"step": name, "seed": recipe.seed, "fold": k, "run_dir": str(result.run_dir),
                        **result_metrics(result.summary)})
        say(f"fold {k}: validation acc@1 {records[-1]['val_acc1']:.2f}, test acc@1 {records[-1]['acc1']:.2f} "
            f"({result.run_dir})")
    return records, fold_table([(name, f"{name} ({recipe.kfold}-fold)", None)], records)
