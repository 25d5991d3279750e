"""The optimizer (CONTRACT §2, §3): Optuna searches the split of a budget over investments.

    scenario ──SpendSpace──▶ spends (feasible by construction) ──Objective──▶ exact conversion
        │                                     ▲
        └── study (storage: a journal file or a database URL)
              one or K worker processes ask/tell trials ──▶ best split ──▶ simulated for a CI ──▶ BestSplit

space (the search space), objective (a split's value, the study's fingerprint), storage (the Optuna
adapter), study (sampler, trials, workers, `search`), pareto (the front), robust (the split under the
data's uncertainty), returns (money), best (the best-split record). Pure library: the run directory,
progress bars and terminal output are application/optimize.py's.
"""
from sim.optimize.best import BestSplit, Chosen, Problem, best_split, chosen_trial, simulate_split, trial_states
from sim.optimize.objective import POINT, Objective, ObjectiveSpec, fingerprint, make_objective
from sim.optimize.pareto import PARETO_LEVELS, pareto_front, per_level_trials
from sim.optimize.robust import slsqp_best, stability, uncertainty_record
from sim.optimize.space import SpendSpace
from sim.optimize.storage import DEFAULT_JOURNAL, TORN, StorageSpec, Store, open_storage, parse_storage
from sim.optimize.study import SearchResult, Slots, count_complete, make_sampler, quiet_optuna, run_trials, search

__all__ = [
    "DEFAULT_JOURNAL", "PARETO_LEVELS", "POINT", "TORN", "BestSplit", "Chosen", "Objective", "ObjectiveSpec",
    "Problem", "SearchResult", "Slots", "SpendSpace", "StorageSpec", "Store", "best_split", "chosen_trial",
    "count_complete", "fingerprint", "make_objective", "make_sampler", "open_storage", "pareto_front",
    "parse_storage", "per_level_trials", "quiet_optuna", "run_trials", "search", "simulate_split", "slsqp_best",
    "stability", "trial_states", "uncertainty_record",
]
