"""The paper's numbers, in one place (Maennel et al. 2020, arXiv 2006.10455): read off its figures.

The configs mark them on our plots (`config.paper_reference`) and the claim rules quote them.

    from rl_align.claims import paper
    paper.FIG5["covariance"]          # train accuracy at paper.FIG5["iterations"]
    paper.FIG20["right"]["f"]         # f at paper.FIG20["right"]["sigma"]
"""

# Fig 20 (appendix; Fig 4 left): f of dense nets on Gaussian data, at these sigmas (std reading).
FIG20 = {
  "left": {
    "sigma": (1.0, 1.2, 1.4, 1.6, 1.8, 1.9),
    "f": (0.381, 0.364, 0.349, 0.334, 0.322, 0.316),
  },
  "middle": {
    "sigma": (0.1, 0.5, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0),
    "f": (0.184, 0.197, 0.207, 0.206, 0.203, 0.193, 0.178, 0.163),
  },
  "right": {
    "sigma": (0.1, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
    "f": (0.184, 0.202, 0.225, 0.238, 0.247, 0.251, 0.252),
  },
}

# Fig 4 centre / right (CIFAR10, the Fig 2 CNN, first layer at std 0.002): the epoch-40 peak of f,
# and the largest patch eigenvalue (mean brightness) on the same axis.
FIG4 = {
  "random": {"peak_f": 0.10, "peak_lambda": 0.25, "largest_lambda": 20.0},
  "real": {"peak_f": 0.024, "peak_lambda": 1.1, "largest_lambda": 20.0},
  "epochs": (5, 10, 20, 40),
}

# Fig 5 (CIFAR10, 20k upstream / 25k downstream): downstream train accuracy at 1000 and 2000 of
# 4500 iterations; all arms ~0.97 by 4500.
FIG5 = {
  "iterations": (1000, 2000),
  "downstream_steps": 4500,
  "pretrained_no_rescaling": (0.78, 0.915),
  "pretrained": (0.745, 0.885),
  "covariance": (0.735, 0.88),
  "scratch": (0.64, 0.79),
}
