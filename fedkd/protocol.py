"""The wire contract between the fedkd ServerApp and ClientApps.

Every message type, record name and key that crosses the network is defined here, once. Both
sides import these constants; no string literal for a key appears anywhere else.

One round is ONE exchange (deployment pays seconds of polling per exchange):

server -> client  ``train.kd_round``
    config  ``ROUND_CONFIG``: ``SERVER_ROUND``, ``RUN_TOKEN`` (the run's id: a client files its
            student's state under it, so a resumed run finds it and a new run does not),
            ``PUBLIC_SEED`` (list of ints) + ``PUBLIC_COUNT`` -- predict on the public subset
            :func:`fedkd.sampling.public_subset` draws from them (a seed, not a list of indices);
            with ``views.*`` on, ``VIEW_SEED``: answer on the views :class:`fedkd.views.Views`
            draws from it, and ``CONSENSUS_VIEW_SEED``: the teacher is on those views;
    arrays  ``ROUND_ARRAYS``: optionally ``CONSENSUS_INDICES`` (int32, (m,)) and the parts of
            ``CONSENSUS_PROBS`` ((m, K) probabilities, encoded by ``algorithm.codec``) -- the
            teacher to digest before local training, only on the samples this client will use.
client -> server  reply
    arrays  ``REPLY_ARRAYS``: the parts of ``SOFT_LABELS`` ((n, K), logits or probs as the
            algorithm's ``soft_label_kind`` says, encoded by ``algorithm.codec``);
    metrics ``REPLY_METRICS``: ``NUM_EXAMPLES`` plus the client's training/evaluation metrics.

An encoded block travels as one array per codec part, keyed ``part_key(name, part)``
(``soft-labels.values``; :mod:`fedkd.codecs`).

Once per node, before its first round, the server asks it to describe itself:

server -> client  ``query.describe`` (empty content)
client -> server  metrics ``REPLY_METRICS``: ``CLIENT_ID``, ``NUM_EXAMPLES``, ``NUM_PARAMETERS``
                  (+ ``CLASS_COUNTS`` when ``algorithm.combine`` weighs clients per class)
                  and config ``DESCRIBE_CONFIG``: ``ARCHITECTURE``.

Nothing else ever leaves a client: no raw data, no weights.
"""

from typing import Final

# Message types (``<category>.<action>``, as Flower requires).
KD_ROUND: Final = "train.kd_round"
DESCRIBE: Final = "query.describe"

# Record names inside a message's RecordDict.
ROUND_CONFIG: Final = "config"
ROUND_ARRAYS: Final = "arrays"
REPLY_ARRAYS: Final = "arrays"
REPLY_METRICS: Final = "metrics"
DESCRIBE_CONFIG: Final = "config"

# Keys (kebab-case on the wire).
SERVER_ROUND: Final = "server-round"
RUN_TOKEN: Final = "run-token"
PUBLIC_SEED: Final = "public-seed"
PUBLIC_COUNT: Final = "public-count"
VIEW_SEED: Final = "view-seed"  # (views.* on) the round's views of the public samples
CONSENSUS_VIEW_SEED: Final = "consensus-view-seed"  # (views.* on) the views the teacher is on
CONSENSUS_INDICES: Final = "consensus-indices"
CONSENSUS_PROBS: Final = "consensus-probs"
SOFT_LABELS: Final = "soft-labels"
ABSTAIN: Final = "abstain"  # packed bits, one per public sample: 1 = no say (clients.abstain)
NUM_EXAMPLES: Final = "num-examples"
CLIENT_ID: Final = "client-id"
ARCHITECTURE: Final = "architecture"
NUM_PARAMETERS: Final = "num-parameters"
CLASS_COUNTS: Final = "class-counts"  # per-class private example counts, only when the
# combine rule needs them (algorithm.combine=class_weighted)

# Client metrics reported with every round reply (all floats).
TEST_ACCURACY: Final = "test-accuracy"
TEST_LOSS: Final = "test-loss"
TRAIN_LOSS: Final = "train-loss"
DIGEST_LOSS: Final = "digest-loss"
STUDENT_ROUND: Final = "student-round"  # the round the student it started from was trained in
# (0: a fresh student) -- the server notices a client that lost its state
DP_EPSILON: Final = "dp-epsilon"  # ε the client's accountant has spent so far (dp.* on)
DP_EXHAUSTED: Final = "dp-exhausted"  # 1: the budget allowed no training this round

# The only metrics a round reply may carry (scalars): the server rejects anything else.
REPLY_METRIC_KEYS: Final = frozenset(
    {
        NUM_EXAMPLES,
        TEST_ACCURACY,
        TEST_LOSS,
        TRAIN_LOSS,
        DIGEST_LOSS,
        STUDENT_ROUND,
        DP_EPSILON,
        DP_EXHAUSTED,
    }
)

# The only record names a client reply may carry: the server rejects anything else.
ALLOWED_REPLY_RECORDS: Final = frozenset({REPLY_ARRAYS, REPLY_METRICS})


def part_key(name: str, part: str) -> str:
    """The array key of one codec part of an encoded block (``soft-labels.values``)."""
    return f"{name}.{part}"


# run_config keys: the whole composed experiment config as JSON (set by the `fedkd` launcher),
# or, for a bare `flwr run`, Hydra overrides to compose the packaged conf/ with.
RUN_CONFIG_KEY: Final = "cfg-json"
RUN_OVERRIDES_KEY: Final = "overrides"
# true: continue the run in the config's output_dir from its checkpoint (`fedkd resume=<dir>`)
RUN_RESUME_KEY: Final = "resume"
