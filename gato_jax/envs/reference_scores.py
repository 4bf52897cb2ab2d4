"""Published human and random Atari scores, for human-normalised scores; no simulator is imported here
(gato-train's in-training evaluators load it on hosts without ale-py or gymnasium).

From Mnih et al. 2015, "Human-level control through deep reinforcement learning" (Nature 518),
Extended Data Table 2: "Random" and "Human" (a professional tester, 5-minute episodes of at most
18,000 frames, the same cap the datasets here use). Human-normalised = (R - random) / (human - random).
"""

# game -> (random score, human score)
HUMAN_RANDOM = {
    "pong": (-20.7, 9.3),
    "breakout": (1.7, 31.8),
    "freeway": (0.0, 29.6),
}
