"""Every `config.nas` key with its default (AutoTinyBERT, scaled to the MiniLM-L6 teacher).

Their space vs BERT-base (L12, 768, FFN 3072, qkv 768): layers 1-8, hidden 128-768, FFN
128-3072, qkv 180-768. Ours vs MiniLM-L6 (L6, 384, FFN 1536, qkv 384): every dimension up to
the teacher's (the supernet has the teacher's shape), the minima at the same fraction of it.
The supernet run itself reads the ordinary keys (train.*, optim.*, data.*, mesh.*,
checkpoint.*); configs/autotinybert.py sets them.
"""

import ml_collections


def defaults() -> ml_collections.ConfigDict:
    n = ml_collections.ConfigDict()
    n.init_from_teacher = True         # supernet starts as the teacher (else random init)
    n.rewire = False                   # True: units sorted by weight magnitude first (rewire.py)
    n.space = ml_collections.ConfigDict()          # (min, max, step) per dimension
    n.space.layers = (1, 6, 1)
    n.space.hidden = (96, 384, 48)     # multiples of 12: exported with 12 HF heads, see extract
    n.space.ffn = (96, 1536, 96)
    n.space.qkv = (96, 384, 48)        # 12 heads of 8..32 dims; qkv <= hidden per arch
    n.buckets = ml_collections.ConfigDict()        # compiled widths of the supernet step
    n.buckets.hidden = (192, 384)
    n.buckets.ffn = (768, 1536)
    n.buckets.qkv = (192, 384)
    n.kd = ml_collections.ConfigDict()
    n.kd.att_weight = 1.0              # theirs: att_loss + rep_loss
    n.kd.rep_weight = 1.0

    n.latency = ml_collections.ConfigDict()
    n.latency.runtime = "hf_torch"     # hf_torch: the exported HF model | jax: jitted sub-model
    n.latency.batch_sizes = (1, 32)
    n.latency.seq_len = 128
    n.latency.threads = 1              # torch intra-op threads (theirs: 1); 0 = torch default
    n.latency.num_archs = 60           # random archs measured for the predictor (+ fixed ones)
    n.latency.warmup = 2
    n.latency.repeats = 7              # median of these (rounds, runtime/latency.py)
    n.latency.group = 6                # hf_torch: archs timed side by side with the teacher
    n.latency.holdout = 0.25           # fraction of the table held out for the error
    n.latency.search_batch = 1         # which batch size's latency the window applies to
    n.predictor = ml_collections.ConfigDict()
    n.predictor.hidden = 16
    n.predictor.layers = 2
    n.predictor.members = 5            # an ensemble, averaged in log space (see predictor.py)
    n.predictor.steps = 3000
    n.predictor.lr = 3e-3

    n.search = ml_collections.ConfigDict()
    n.search.speedups = (2.0, 4.0, 8.0)
    n.search.window = (0.85, 1.1)      # predicted latency in window * teacher / speedup
    n.search.generation = 25
    n.search.explore = 0.5             # half new random candidates, half mutations
    n.search.parents = 25              # roulette among the top 25
    n.search.mutation_prob = 0.25
    n.search.budget = 50               # fitness evaluations per speedup
    n.fitness = ml_collections.ConfigDict()        # short fine-tune of a sub-model
    n.fitness.tasks = ("sst2", "mrpc")
    n.fitness.steps = 100
    n.fitness.batch_size = 32
    n.fitness.seq_len = 64
    n.fitness.lr = 2e-4
    n.fitness.train_subset = 0         # of the train rows left after the held-out slice
    n.fitness.eval_subset = 0
    n.fitness.heldout_rows = 872       # > 0: score on this many train rows held out of the
    #                                    fitness fine-tunes (seeded by data.split_seed), so
    #                                    the search never sees the dev set the final table
    #                                    reports; 0: score on the dev set

    n.finetune = ml_collections.ConfigDict()       # the found and the uniform models
    n.finetune.tasks = ("sst2", "mrpc")
    n.finetune.steps = 400
    n.finetune.batch_size = 32
    n.finetune.seq_len = ml_collections.ConfigDict({"sst2": 64, "mrpc": 96})  # per task
    #                                  (SST-2 dev is at most 55 tokens, MRPC dev 86)
    n.finetune.lr = 1e-4
    n.finetune.train_subset = 0
    n.finetune.eval_subset = 0         # 0: the whole dev set (the table's)
    n.finetune.uniform_layers = (1, 2, 3, 4, 5, 6)  # the supernet's first k layers
    n.finetune.seeds = (0, 1, 2)       # every final fine-tune once per seed (95 % intervals)
    return n
