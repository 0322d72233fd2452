"""The numbers the papers report, in one place: notebooks and metrics set our measurements beside them."""

# GCA: linear-probe top-1 (%) reported by Chen et al. (NeurIPS 2024, arXiv 2502.20141): ResNet-18/50, 500/200 epochs
GCA_LINEAR_PROBE = {
    "CIFAR-10": {"ince": 92.01, "gca-ince": 92.36, "gca-rince": 92.09, "gca-uot": 92.61},
    "CIFAR-100": {"ince": 74.84, "gca-uot": 77.60},
    "ImageNet-100": {"ince": 73.01, "gca-uot": 74.09},
    "CIFAR-10 noisy views": {"ince": 82.03, "gca-uot": 83.18},
    "CIFAR-10C": {"ince": 70.07, "gca-uot": 71.45},
}

# MMCL: values read off Nakada et al. (AISTATS 2023): sin Theta of the closed form (Fig. 1), with unpaired data
# (Fig. 2), many-to-many accuracy (Table 1) and semi-supervised pairs on MNIST <-> Fashion-MNIST (Fig. 3)
MMCL = {
    "closed_form": {"n500_p0": 0.25, "n5000_p0": 0.08, "n50000_p0": 0.024, "n50000_p0.5": 0.048,
                    "n50000_p0.8": 0.124, "unimodal": 0.27},
    "fig2": {100: (2.32, 1.77), 200: (1.95, 1.30), 500: (1.28, 0.78)},  # sin Theta at N/n = 0 and 15
    "fig2_svd_optimum": {100: 0.56, 200: 0.39, 500: 0.25},
    "table1": {"none": {0.1: 0.684, 0.2: 0.628, 0.3: 0.159}, "k10": {0.1: 0.675, 0.2: 0.672, 0.3: 0.662}},
    "fig3": {"paired_only": 0.59, "with_unpaired": 0.645, "oracle": 0.73},
}
