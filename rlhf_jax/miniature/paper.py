"""The paper's numbers (Xu et al., ICML 2024) that the miniature's tables are printed beside.

Only what the paper states (see shared PAPER_NOTES): APPS pass@5 in percent per difficulty (intro /
inter / comp), SafeRLHF Help / Harm / Safety rate (Llama-2-7B, Table 2), the HH-RLHF reward of the
OpenAssistant judge (Table 4), and the Table 3 ablation (CodeLlama-34B APPS pass@5; HH reward).
"""

from __future__ import annotations

TABLE7 = {  # APPS pass@5 (%), intro / inter / comp
    "CodeLlama-7B": {"SFT": (30.0, 7.8, 2.8), "DPO-Iter": (20.9, 3.4, 1.3), "PPO": (29.4, 7.6, 2.4)},
    "CodeLlama-13B": {"SFT": (33.7, 8.7, 3.6), "DPO-Iter": (33.0, 8.0, 2.8), "PPO": (36.4, 11.5, 4.6)},
    "CodeLlama-34B": {"SFT": (38.6, 10.1, 3.9), "DPO-Iter": (34.2, 9.3, 3.7), "PPO": (44.4, 18.0, 9.1)},
}
TABLE8 = {"SFT": (10.3, 15.2), "DPO": (0.0, 0.0), "DPO-Iter": (3.5, 3.2), "PPO": (19.7, 22.4)}  # 10@1k valid/test

TABLE3 = {  # row: (HH-RLHF reward, APPS pass@5 intro, inter, comp) for CodeLlama-34B
    "SFT": (0.532, 38.6, 10.1, 3.9),
    "PPO (baseline)": (0.706, 18.0, 2.4, 1.1),
    "+ adv. norm": (0.716, 38.1, 11.4, 4.6),
    "+ large batch": (0.716, 42.3, 14.6, 7.5),
    "+ ref. EMA": (0.718, 44.4, 18.0, 9.1),
}

TABLE2 = {  # SafeRLHF, Llama-2-7B, reference SFT(Alpaca): (Help, Harm, Safety rate %)
    "SFT(Alpaca)": (-2.62, 1.50, 41.6),
    "PPO": (1.69, -12.08, 99.5),
    "DPO": (-4.19, -0.97, 55.4),
    "DPO + SFT(Safe)": (-1.62, -3.50, 71.8),
    "+ filter dual-unsafe": (2.46, -4.88, 80.8),
    "+ filter dual-safe": (-2.86, -6.82, 95.8),
    "DPO-Iter round 1": (None, -5.23, 86.7),
    "DPO-Iter round 2": (None, -8.83, 99.7),
    "DPO-Iter round 3": (None, -10.21, 99.9),
    "DPO-Iter round 4": (None, -11.07, 99.9),
}

TABLE4 = {"SFT": 0.532, "RRHF": 0.523, "PRO": 0.529, "DPO": 0.611, "DPO-Iter": 0.678, "PPO": 0.718}

CLAIMS = {
    "table1": "Table 1: DPO's loss is minimal at (0.1, 0, 0.9), mass on a response with zero reference "
              "probability; the KL-regularized (PPO) objective forbids it (its optimum gives y3 exactly 0).",
    "synthetic": "Sec. 4.2: DPO raises the probability of responses the preference data never covers above "
                 "the reference; PPO on a learned reward keeps out-of-distribution mass lower than DPO.",
    "shift": "Table 2: DPO suffers from the shift between the SFT model and the preference data: DPO-Iter "
             "(on-policy samples labelled by a reward model) reaches a higher safety rate than DPO.",
    "sft_safe": "Table 2: reducing the shift (DPO from SFT(Safe)) raises DPO's safety rate.",
    "filters": "Table 2: removing the noisy dual-unsafe / dual-safe pairs raises DPO's safety rate further.",
    "rounds": "Table 2: DPO-Iter's safety rate grows with the rounds (round 4 >= round 1).",
    "ppo_safety": "Table 2: PPO reaches a safety rate at least that of DPO, with a higher Help.",
    "tricks": "Table 3: the PPO tricks help on code: the full PPO (adv. norm + large batch + EMA) beats the "
              "baseline PPO.",
    "ppo_code": "Tables 7/8: PPO improves over SFT on code with the unit-test reward.",
    "dpo_iter_code": "Tables 7/8: DPO-Iter does not beat SFT on code.",
    "table4": "Table 4: on the dialogue reward, PPO > DPO-Iter > DPO, and RRHF / PRO stay near SFT.",
}
