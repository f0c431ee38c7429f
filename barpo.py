"""SPO, ARPO and BARPO in one file: an educational reference implementation of

    "On the Tension Between Optimality and Adversarial Robustness in Policy Optimization"
    (Li et al., arXiv 2512.01228, ICLR 2026).

Run it:
    python barpo.py --env Hopper-v4                       # BARPO, ~2M steps, then the attack suite
    python barpo.py --env Hopper-v4 --algo spo            # standard PPO
    python barpo.py --eval runs/<run>/checkpoint.pt       # evaluate a saved agent under attack

Read it top to bottom: the sections follow the order in which the algorithm runs.

Paper notion                                  Name in this file
--------------------------------------------  -----------------------------------------------
ISA-MDP (CAR): adversary cannot change the    comment in section 6 (why optima are preserved)
  optimal action inside the ball
observation o (normalized state)              `ObsNormalizer`, the `obs` tensors
adversary nu, perturbed observation o_hat     `pgd_attack(...)` -> `o_hat`
ball B_eps(o) (L-infinity, normalized obs)    `eps`, the clamp in `pgd_attack`
policy pi_theta / value V_phi                 `Agent.policy`, `Agent.value`
surrogate l_t (PPO clipped objective)         `surrogate`
SPO  (standard policy optimization)           `--algo spo`  = bilevel loop with kappa = 0
ARPO (strongest adversary, CAR-PPO style)     `--algo arpo` = bilevel loop with kappa = 1
BARPO (bilevel, modulated strength)           `--algo barpo`, `bilevel_update`
adversary strength kappa                      `attack_strength` (the kappa schedule)
KL surrogate (measured strength)              `gaussian_kl`, the `attack_kl` column
lower level (inner minimization)              `adversary_objective` + `pgd_attack`
upper level (outer maximization)              `bilevel_update`
SPO guidance                                  `--spo-guidance`, `Config.spo_guidance`
FOSP (first-order stationary policy)          where the upper-level gradient vanishes; the
                                              notebook's toy shows the sticky ones

What is reconstructed. The paper's text is not available to this project; only its abstract and
public summaries are. The KL-regularized lower level
    o_hat(kappa) = argmin_{B_eps(o)} kappa * l(theta; o_hat) + (1 - kappa) * KL(pi(.|o) || pi(.|o_hat)),
the kappa schedule (a constant 0.02 by default, chosen by measurement; a ramp from 0 to 1 on
request), and the way SPO guidance enters are this project's reading of "modulating adversary
strength" with "a KL surrogate". Everything else (PPO, the CAR-PPO robust surrogate, the eps
ramp, the attacks) follows published settings.
"""

import argparse
import csv
import dataclasses
import json
import math
import os
import shlex
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from gymnasium.vector.utils import batch_space
from torch.optim.adam import adam as functional_adam


# ============================================================================================
# 1. Configuration and command line
# ============================================================================================

# eps of the L-infinity ball on the normalized observation, per task (SA-PPO / CAR-PPO papers).
TASK_EPS = {"Hopper": 0.075, "Walker2d": 0.05, "HalfCheetah": 0.15, "Ant": 0.15}
ATTACKS = ("none", "random", "critic", "mad", "optimal")


@dataclasses.dataclass
class Config:
    env: str = "Hopper-v4"
    algo: str = "barpo"                  # spo | arpo | barpo
    total_steps: int = 2_000_000         # 976 iterations of 2048 steps ~ the published budget
    seed: int = 0
    eps: float | None = None             # None: take TASK_EPS
    kappa: float | None = 0.02           # constant strength (chosen by the Hopper-v4 ablation,
                                         # README); None: ramp 0 -> 1 over the first kappa_ramp
    kappa_ramp: float = 0.5              # fraction of training the ramp takes (when kappa is None)
    spo_guidance: float = 0.0            # weight g of the clean surrogate in ARPO/BARPO
    num_envs: int = 8
    vector_env: str = "sync"             # sync | async (make_envs)
    device: str = "auto"
    compile: str = "auto"                # on | off | auto: on for runs of COMPILE_MIN_STEPS or more
    # PPO, as in the SA-PPO / CAR-PPO Hopper configs
    steps_per_iteration: int = 2048
    epochs: int = 10
    minibatches: int = 32
    clip: float = 0.2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    lr_policy: float = 3e-4
    lr_value: float = 2.5e-4
    max_grad_norm: float = 0.5
    eps_ramp: float = 0.75               # fraction of training over which eps goes 0 -> eps
    pgd_steps: int = 10


class UsageError(Exception):
    """Bad input: main() prints the message as one line and exits with status 2."""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="barpo.py",
        description="Train SPO, ARPO or BARPO on a gymnasium task with Box observations and "
                    "actions, then evaluate it under observation attacks. Or, with --eval, only "
                    "evaluate a saved agent.")
    p.add_argument("--env", default=None,
                   help="gymnasium task id (default Hopper-v4; with --eval, the checkpoint's task)")
    p.add_argument("--algo", default="barpo", choices=["spo", "arpo", "barpo"],
                   help="spo: standard PPO; arpo: PPO against the strongest PGD adversary; "
                        "barpo (default): adversary of modulated strength kappa")
    p.add_argument("--total-steps", type=int, default=Config.total_steps,
                   help="environment steps of training, in whole iterations of 2048 (default %(default)s, the published budget)")
    p.add_argument("--seed", type=int, default=0, help="seed of torch and the environments (default %(default)s)")
    p.add_argument("--eps", type=float, default=None,
                   help="radius of the L-infinity ball on the normalized observation; default "
                        "per task: " + ", ".join(f"{k} {v}" for k, v in TASK_EPS.items()) +
                        "; required for other tasks; with --eval, default the checkpoint's")
    p.add_argument("--kappa", type=float, default=None,
                   help=f"BARPO only: constant adversary strength in [0, 1] (default {Config.kappa}, "
                        "chosen by the Hopper-v4 ablation in the README)")
    p.add_argument("--kappa-ramp", type=float, default=None, metavar="FRACTION",
                   help="BARPO only: instead of a constant kappa, ramp it from 0 to 1 over this "
                        "fraction of training (the notebook toy's schedule; 0.5 was the default "
                        "before the ablation)")
    p.add_argument("--spo-guidance", type=float, default=Config.spo_guidance,
                   help="weight g >= 0 of the clean surrogate added to the ARPO/BARPO objective (default %(default)s)")
    p.add_argument("--pgd-steps", type=int, default=Config.pgd_steps,
                   help="sign-gradient steps of every PGD attack, in training and evaluation (default %(default)s)")
    p.add_argument("--num-envs", type=int, default=Config.num_envs,
                   help="parallel environments (synchronous vector env); must divide 2048 (default %(default)s)")
    p.add_argument("--vector-env", default="sync", choices=["sync", "async"],
                   help="sync (default): step the environments one after the other; async: each "
                        "in its own process, faster only with more free cores than environments")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the networks live; auto (default) is the CPU, because with networks "
                        "this small a GPU trains slower than its machine's CPU (README, Speed)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="run the minibatch update through torch.compile (the fast path): auto "
                        f"(default) for runs of {COMPILE_MIN_STEPS:,} steps or more, where it repays its "
                        "compile time; off is the eager reference code")
    p.add_argument("--out", default=None,
                   help="run folder (default runs/<env>-<algo>-seed<seed>)")
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes per attack (default %(default)s)")
    p.add_argument("--attacks", default=",".join(ATTACKS),
                   help="comma-separated evaluation attacks (default: all of %(default)s)")
    p.add_argument("--optimal-attack-steps", type=int, default=200_000,
                   help="PPO steps to train the learned optimal attacker (published evaluations "
                        "train it for millions of steps and scan hyperparameters; this default "
                        "fits a few CPU minutes and so gives an upper bound on robustness; default %(default)s)")
    p.add_argument("--eval", default=None, metavar="CHECKPOINT",
                   help="only evaluate this checkpoint.pt (no training)")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="warm start from this checkpoint (weights and normalizer), e.g. an SPO agent")
    return p.parse_args(argv)


def config_from_args(args):
    """Turn command-line arguments into a Config, rejecting bad input with a UsageError."""
    # BARPO's strength: a constant (--kappa, default Config.kappa) unless --kappa-ramp asks for the ramp
    ramp = args.kappa_ramp is not None
    if ramp and args.kappa is not None:
        raise UsageError("give --kappa (a constant strength) or --kappa-ramp (a ramp), not both")
    kappa = None if ramp else (Config.kappa if args.kappa is None else args.kappa)
    cfg = Config(env=args.env or "Hopper-v4", algo=args.algo, total_steps=args.total_steps,
                 seed=args.seed, eps=args.eps, kappa=kappa,
                 kappa_ramp=args.kappa_ramp if ramp else Config.kappa_ramp,
                 spo_guidance=args.spo_guidance, pgd_steps=args.pgd_steps,
                 num_envs=args.num_envs, vector_env=args.vector_env, device=args.device,
                 compile=args.compile)
    check_task(cfg.env)
    if cfg.eps is None:
        cfg.eps = default_eps(cfg.env)
    check_eps(cfg.eps)
    if (args.kappa is not None or ramp) and cfg.algo != "barpo":
        raise UsageError(f"--kappa and --kappa-ramp set BARPO's strength; drop them or use "
                         f"--algo barpo (spo is kappa 0, arpo is kappa 1)")
    if cfg.kappa is not None and not 0.0 <= cfg.kappa <= 1.0:
        raise UsageError(f"--kappa {cfg.kappa} is outside [0, 1]; give a strength in [0, 1]")
    if not 0.0 < cfg.kappa_ramp <= 1.0:
        raise UsageError(f"--kappa-ramp {cfg.kappa_ramp} must be in (0, 1]")
    if cfg.spo_guidance < 0:
        raise UsageError(f"--spo-guidance {cfg.spo_guidance} is negative; give a weight >= 0")
    if cfg.pgd_steps < 1:
        raise UsageError(f"--pgd-steps {cfg.pgd_steps} must be at least 1")
    if cfg.num_envs < 1 or cfg.steps_per_iteration % cfg.num_envs:
        raise UsageError(f"--num-envs {cfg.num_envs} must be a positive divisor of "
                         f"{cfg.steps_per_iteration} (e.g. 1, 4, 8, 16)")
    if cfg.total_steps < cfg.steps_per_iteration:
        raise UsageError(f"--total-steps {cfg.total_steps} is less than one iteration; give at "
                         f"least {cfg.steps_per_iteration}")
    check_eval_args(args)
    return cfg


def check_eval_args(args):
    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes} must be at least 1")
    parse_attacks(args.attacks)


def check_task(env_id):
    try:
        return gym.spec(env_id)
    except gym.error.Error as e:
        raise UsageError(f"unknown task '{env_id}' ({e}); give a gymnasium id such as Hopper-v4")


def default_eps(env_id):
    eps = TASK_EPS.get(env_id.split("-")[0])
    if eps is None:
        raise UsageError(f"no default eps for {env_id}; give one with --eps (e.g. --eps 0.1)")
    return eps


def check_eps(eps):
    if eps < 0 or not math.isfinite(eps):
        raise UsageError(f"--eps {eps} must be a finite number >= 0")


def parse_attacks(text):
    names = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown or not names:
        raise UsageError(f"unknown attack(s) {unknown or text!r} in --attacks; choose from "
                         f"{','.join(ATTACKS)}")
    return names


def pick_device(name):
    """auto is the CPU: these networks are so small that a GPU spends its time on kernel launches
    and transfers, and trained slower than its own machine's CPU even compiled (README, Speed)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but torch sees no CUDA device; use --device cpu or auto")
    return torch.device("cpu" if name == "auto" else name)


# ============================================================================================
# 2. Environments
# ============================================================================================

def make_envs(env_id, num_envs, vectorization="sync"):
    """A gymnasium vector env of a task with 1-D Box observations and Box actions.

    sync steps the environments one after the other in this process; async steps each in a
    process of its own, which pays for its messages only with more free cores than environments
    (README, Speed). SAME_STEP autoreset: a finished env is reset inside the same step() and its
    last observation is in info["final_obs"], so every stored transition is a real one.
    """
    check_task(env_id)
    try:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=vectorization,
                            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    except gym.error.DependencyNotInstalled as e:
        raise UsageError(f"{env_id} needs a missing package ({e}); pip install 'gymnasium[mujoco]'")
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        envs.close()
        raise UsageError(f"{env_id} has observation space {obs_space}; barpo.py needs a 1-D Box "
                         f"(continuous vector) observation, e.g. Hopper-v4")
    if not isinstance(act_space, gym.spaces.Box):
        envs.close()
        raise UsageError(f"{env_id} has action space {act_space}; barpo.py needs a Box "
                         f"(continuous) action space, e.g. Hopper-v4")
    return envs


class ObsNormalizer:
    """o = clip((s - mean) / std, -10, 10) with running mean and variance of the states seen.

    Owned rather than gymnasium's NormalizeObservation wrapper: the attacker works on o, the
    statistics must be frozen at evaluation and saved in the checkpoint, so they live here.
    """

    def __init__(self, dim):
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4

    def update(self, x):  # merge the batch moments into the running ones (Chan et al.)
        b_mean, b_var, n = x.mean(0), x.var(0), x.shape[0]
        delta, total = b_mean - self.mean, self.count + n
        self.mean = self.mean + delta * n / total
        self.var = (self.var * self.count + b_var * n + delta ** 2 * self.count * n / total) / total
        self.count = total

    def __call__(self, x):
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -10.0, 10.0)


class RewardScaler:
    """Divide rewards by the running std of the discounted return, then clip to [-10, 10]."""

    def __init__(self, num_envs, gamma):
        self.stats, self.ret, self.gamma = ObsNormalizer(1), np.zeros(num_envs), gamma

    def __call__(self, reward, done):
        self.ret = self.ret * self.gamma + reward
        self.stats.update(self.ret[:, None])
        self.ret[done] = 0.0
        return np.clip(reward / np.sqrt(self.stats.var[0] + 1e-8), -10.0, 10.0)


# ============================================================================================
# 3. Actor and critic
# ============================================================================================

def mlp(n_in, n_out, out_gain):
    """tanh 64x64 MLP with orthogonal init (gain sqrt 2 inside, out_gain at the output)."""
    layers = [nn.Linear(n_in, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, n_out)]
    for layer, gain in zip(layers[::2], (math.sqrt(2), math.sqrt(2), out_gain)):
        nn.init.orthogonal_(layer.weight, gain)
        nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


class Agent(nn.Module):
    """pi_theta(a|o) = Normal(mu_theta(o), diag(sigma^2)) with state-independent log sigma;
    V_phi(o) a separate network."""

    def __init__(self, obs_dim, act_dim):
        super().__init__()
        self.mu = mlp(obs_dim, act_dim, out_gain=0.01)
        self.log_std = nn.Parameter(torch.zeros(act_dim))
        self.critic = mlp(obs_dim, 1, out_gain=1.0)

    def policy(self, obs):
        return torch.distributions.Normal(self.mu(obs), self.log_std.exp(), validate_args=False)

    def value(self, obs):
        return self.critic(obs).squeeze(-1)


# ============================================================================================
# 4. Rollout, GAE, the surrogate
# ============================================================================================

class Rollout:
    """Collects steps_per_iteration transitions on clean observations; keeps env state between
    iterations. Tensors have shape (T, num_envs, ...)."""

    def __init__(self, envs, agent, obs_norm, cfg, device):
        self.envs, self.agent, self.obs_norm, self.cfg, self.device = envs, agent, obs_norm, cfg, device
        self.T, n = cfg.steps_per_iteration // envs.num_envs, envs.num_envs
        obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
        self.obs = torch.zeros(self.T, n, obs_dim, device=device)
        self.actions = torch.zeros(self.T, n, act_dim, device=device)
        self.logp, self.rewards, self.dones, self.values = (
            torch.zeros(self.T, n, device=device) for _ in range(4))
        self.act_low, self.act_high = envs.single_action_space.low, envs.single_action_space.high
        self.reward_scaler = RewardScaler(n, cfg.gamma)
        self.raw_obs, _ = envs.reset(seed=cfg.seed)
        self.episode_return, self.finished = np.zeros(n), []

    def tensor(self, x):
        return torch.as_tensor(x, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def collect(self):
        for t in range(self.T):
            self.obs_norm.update(self.raw_obs)
            obs = self.tensor(self.obs_norm(self.raw_obs))
            dist = self.agent.policy(obs)
            action = dist.sample()
            self.obs[t], self.actions[t], self.values[t] = obs, action, self.agent.value(obs)
            self.logp[t] = dist.log_prob(action).sum(-1)
            self.raw_obs, reward, term, trunc, info = self.envs.step(
                np.clip(action.cpu().numpy(), self.act_low, self.act_high))
            done = term | trunc
            self.episode_return += reward
            self.finished += list(self.episode_return[done])
            self.episode_return[done] = 0.0
            scaled = self.tensor(self.reward_scaler(reward, done))
            # A time-limit cut is not a real end: bootstrap it, r + gamma * V(s_final).
            for i in np.flatnonzero(trunc & ~term):
                final = self.tensor(self.obs_norm(info["final_obs"][i]))
                scaled[i] += self.cfg.gamma * self.agent.value(final)
            self.rewards[t], self.dones[t] = scaled, self.tensor(done)
        last_value = self.agent.value(self.tensor(self.obs_norm(self.raw_obs)))
        return gae(self.rewards, self.values, self.dones, last_value, self.cfg.gamma,
                   self.cfg.gae_lambda)


def gae(rewards, values, dones, last_value, gamma, lam):
    """Generalized advantage estimation.

    delta_t = r_t + gamma * (1 - done_t) * V(o_{t+1}) - V(o_t)
    A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1}     (done_t: episode ended at step t)
    returns = A_t + V(o_t), the critic's regression target.
    """
    advantages = torch.zeros_like(rewards)
    next_value, next_adv = last_value, torch.zeros_like(last_value)
    for t in reversed(range(rewards.shape[0])):
        keep = 1.0 - dones[t]
        delta = rewards[t] + gamma * keep * next_value - values[t]
        next_adv = advantages[t] = delta + gamma * lam * keep * next_adv
        next_value = values[t]
    return advantages, advantages + values


def surrogate(logp, old_logp, adv, clip):
    """PPO's clipped surrogate l_t, per sample.

    Performance difference lemma: J(pi) - J(pi_old) = E_{s~d_pi, a~pi}[A_old(s, a)] / (1 - gamma).
    Replacing d_pi by d_old and sampling a from pi_old gives the first-order estimate
    E_old[r_t A_t] with r_t = pi(a_t|o_t) / pi_old(a_t|o_t); it is only trusted near pi_old,
    so PPO takes the pessimistic min with the ratio clipped to [1 - c, 1 + c]:
    """
    ratio = torch.exp(logp - old_logp)
    return torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)


def surrogate_at(agent, obs, actions, old_logp, adv, clip):
    """l_t(theta; o): the surrogate with the current policy evaluated at observation o, clean or
    attacked (the behaviour log-probability old_logp is always the clean one)."""
    return surrogate(agent.policy(obs).log_prob(actions).sum(-1), old_logp, adv, clip)


def gaussian_kl(mu_p, mu_q, log_std):
    """KL(N(mu_p, s^2) || N(mu_q, s^2)) summed over action dims, per sample.

    KL = log(s_q/s_p) + (s_p^2 + (mu_p - mu_q)^2) / (2 s_q^2) - 1/2; with s_p = s_q = s the log and
    the constants cancel, leaving sum_i (mu_p,i - mu_q,i)^2 / (2 s_i^2), symmetric in p and q:
    """
    return ((mu_p - mu_q) ** 2 / (2 * torch.exp(2 * log_std))).sum(-1)


# ============================================================================================
# 5. The attacker: one projected-gradient routine, many objectives
# ============================================================================================

def pgd_attack(obs, objective, eps, steps):
    """Approximately minimize objective(o_hat) (per sample) over B_eps(obs) = {|o_hat - obs|_inf <= eps}.

    Why sign steps and clamping: to first order objective(o + d) ~ objective(o) + g.d, and over the
    L-infinity ball the minimizer of g.d is d = -eps * sign(g) (each coordinate independently
    goes to the end of its interval). PGD takes that step in pieces, re-linearizing each time, and
    projects back; projection onto a box is a per-coordinate clamp. The pieces shrink linearly,
    step_i = 4 eps (K - i) / (K (K + 1)) for i = 0..K-1: they add up to 2 eps, so the path can cross
    the ball from any start, and the last ones are small, so an optimum inside the ball (BARPO at
    small kappa, where the KL pulls o_hat back to o) is found rather than jumped around. The random
    start avoids the zero gradient of objectives that are minimal at o_hat = o (the KL). Samples
    are independent, so the gradient of the summed objective gives every sample its own gradient.
    eps may be a number or a 0-d tensor; at eps = 0 the ball is the point obs and so is o_hat.
    """
    lo, hi = obs - eps, obs + eps
    o_hat = obs + eps * (2 * torch.rand_like(obs) - 1)
    for i in range(steps):
        step = 4 * eps * (steps - i) / (steps * (steps + 1))
        grad = input_gradient(lambda x: objective(x).sum(), o_hat)
        o_hat = torch.min(torch.max(o_hat - step * grad.sign(), lo), hi)
    return o_hat


def input_gradient(f, x):
    """d f / d x for a scalar f, without touching the gradients of any parameter.

    Two spellings of one derivative: torch.compile traces torch.func.grad into its graph but
    stops at torch.autograd.grad, while eagerly autograd.grad is the faster of the two.
    """
    if torch.compiler.is_compiling():
        return torch.func.grad(f)(x).detach()
    with torch.enable_grad():  # evaluation attacks run under no_grad
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(f(x), x)[0]


def adversary_objective(agent, obs, actions, old_logp, adv, clip, kappa):
    """BARPO's lower level: f(o_hat) = kappa * l(theta; o_hat) + (1 - kappa) * KL(pi(.|o) || pi(.|o_hat)).

    kappa = 1: f = l, the strongest adversary of ARPO / CAR-PPO (it only hurts the surrogate).
    kappa -> 0: the KL term dominates and its minimizer is o_hat = o, i.e. SPO (the loop skips the
    attack at kappa = 0 so that the update is SPO's to the bit). At kappa = 1 the KL term is
    multiplied by exactly 0, so f is l to the bit; kappa may be a number or a 0-d tensor.
    In between it is the Lagrangian of "hurt the surrogate most within a KL budget": divided by
    kappa, f is l + lam * KL with lam = (1 - kappa) / kappa, so every nat of KL the adversary causes
    costs it lam units of surrogate. Relaxed to policy space, min_q E_q[A] + lam KL(q || pi) is
    solved by q(a) ~ pi(a|o) exp(-A(o, a) / lam) (set the derivative of the Lagrangian with
    sum_a q(a) = 1 to zero: A(a) + lam (log q(a)/pi(a) + 1) + nu = 0): an exponentially tilted
    policy with temperature lam (the notebook plots it; a test checks it).
    """
    with torch.no_grad():
        mu_clean = agent.mu(obs)

    def objective(o_hat):
        dist = agent.policy(o_hat)  # one forward pass serves both terms
        return (kappa * surrogate(dist.log_prob(actions).sum(-1), old_logp, adv, clip)
                + (1 - kappa) * gaussian_kl(mu_clean, dist.loc, agent.log_std.detach()))

    return objective


def critic_objective(agent):
    """Critic attack: lower the agent's own value estimate V(o_hat)."""
    return agent.value


def mad_objective(agent, obs):
    """MAD attack: maximize KL(pi(.|o) || pi(.|o_hat)), i.e. minimize its negative."""
    with torch.no_grad():
        mu_clean = agent.mu(obs)
    return lambda o_hat: -gaussian_kl(mu_clean, agent.mu(o_hat), agent.log_std.detach())


# ============================================================================================
# 6. The bilevel loop: strength schedule, eps ramp, lower and upper level
# ============================================================================================

def attack_strength(cfg, progress):
    """kappa_k for training progress in [0, 1): 0 for SPO, 1 for ARPO; for BARPO a constant
    (--kappa, default 0.02) or a ramp from 0 to 1 over the first kappa_ramp of training
    (--kappa-ramp: a continuation from SPO's smooth landscape to ARPO's, the toy's winner).
    Why a constant this small: the realized attack KL changes between kappa ~ 0.01 and 0.3 and is
    flat above (notebook section 3), so a linear ramp spends most of training at ARPO's strength;
    on Hopper-v4 kappa 0.02 beat the ramp, kappa 0.1 and kappa 0.5 (README, ablation).

    Why global optima are preserved (ISA-MDP): if no o_hat in B_eps(o) changes the optimal
    action, the Bellman-optimal policy pi* is unaffected by every adversary in the ball, so
    pi* maximizes SPO's objective and every kappa's robust objective at once. Changing kappa
    reshapes the landscape away from pi* (which stationary points exist) but not its optimum.
    """
    if cfg.algo == "spo":
        return 0.0
    if cfg.algo == "arpo":
        return 1.0
    if cfg.kappa is not None:
        return cfg.kappa
    return min(1.0, progress / cfg.kappa_ramp)


def epsilon(cfg, progress):
    """eps_k: linear from 0 to eps over the first eps_ramp (75%) of training (SA-PPO, CAR-PPO)."""
    return cfg.eps * min(1.0, progress / cfg.eps_ramp)


class Batch(NamedTuple):
    """One iteration's transitions, flat over time and environments, or one minibatch of them."""
    obs: torch.Tensor
    actions: torch.Tensor
    old_logp: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def normalized(x):
    return (x - x.mean()) / (x.std() + 1e-8)


def critic_loss(agent, mb):
    """The critic regresses on clean observations for all three methods."""
    return 0.5 * ((agent.value(mb.obs) - mb.returns) ** 2).mean()


def realized_attack_kl(agent, obs, o_hat):
    """The adversary's measured strength: mean KL(pi(.|o) || pi(.|o_hat)) over the samples."""
    with torch.no_grad():
        return gaussian_kl(agent.mu(obs), agent.mu(o_hat), agent.log_std).mean()


def minibatch_loss(agent, mb, kappa, eps, cfg, robust):
    """The loss of one minibatch, and (objective, value loss, attack KL) for the metrics.

    robust (ARPO, BARPO): the lower level first, o_hat_t(kappa) for every sample by PGD against
    the current theta, taken as data (no gradient flows through PGD); the upper level maximizes
    mean_t l_t(theta; o_hat_t) + g * mean_t l_t(theta; o_t). Not robust (SPO, kappa = 0): no
    adversary at all, not a zero-strength one, so the loss is SPO's to the bit. The critic always
    regresses on clean observations. kappa and eps are 0-d tensors: changing them every iteration
    does not recompile the fast path.
    """
    adv = normalized(mb.advantages)
    if robust:
        adversary = adversary_objective(agent, mb.obs, mb.actions, mb.old_logp, adv, cfg.clip, kappa)
        o_hat = pgd_attack(mb.obs, adversary, eps, cfg.pgd_steps)
        attack_kl = realized_attack_kl(agent, mb.obs, o_hat)
    else:
        o_hat, attack_kl = mb.obs, torch.zeros((), device=mb.obs.device)
    objective = surrogate_at(agent, o_hat, mb.actions, mb.old_logp, adv, cfg.clip).mean()
    if robust and cfg.spo_guidance > 0:
        objective = objective + cfg.spo_guidance * surrogate_at(agent, mb.obs, mb.actions, mb.old_logp,
                                                                adv, cfg.clip).mean()
    value_loss = critic_loss(agent, mb)
    return value_loss - objective, torch.stack([objective.detach(), value_loss.detach(), attack_kl])


def minibatch_step(agent, optimizer, mb, kappa, eps, cfg, robust):
    """One upper-level step: the minibatch loss, its gradient clipped to norm max_grad_norm, Adam."""
    loss, stats = minibatch_loss(agent, mb, kappa, eps, cfg, robust)
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(optimizer_params(optimizer), cfg.max_grad_norm)
    optimizer.step()
    return stats


def optimizer_params(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def bilevel_update(agent, optimizer, batch, cfg, kappa, eps, step=minibatch_step):
    """PPO epochs in which every minibatch solves the lower level, then takes an upper-level step
    (`step`: minibatch_step, or the fast path's compiled copy of it). kappa = 0 is SPO.
    Returns the mean surrogate, value loss and realized attack KL."""
    device = batch.obs.device
    kappa_t, eps_t = torch.tensor(kappa, device=device), torch.tensor(eps, device=device)
    n = batch.obs.shape[0]
    sums = torch.zeros(3, device=device)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(n, device=device).split(n // cfg.minibatches):
            mb = Batch(*(x[idx] for x in batch))
            sums += step(agent, optimizer, mb, kappa_t, eps_t, cfg, robust=kappa > 0)
    return (sums / (cfg.epochs * cfg.minibatches)).tolist()


def make_optimizer(agent, cfg):
    # fused Adam: one kernel for all parameters, measured ~20% faster per minibatch on 2 cores.
    return torch.optim.Adam([
        {"params": [*agent.mu.parameters(), agent.log_std], "lr": cfg.lr_policy},
        {"params": agent.critic.parameters(), "lr": cfg.lr_value}], eps=1e-5, fused=True)


# ============================================================================================
# 6b. The fast path: the same minibatch step, compiled
# ============================================================================================
#
# Why it is needed: a minibatch is 64 samples through 64x64 networks, and the robust step runs
# 10 PGD iterations of forward + backward on it, so eagerly nearly all the time goes to Python
# and framework overhead per tiny operation (on a GPU, to a kernel launch each). torch.compile
# traces the whole step (PGD, loss, gradient, clipping, Adam) into one graph of fused kernels.
# What it buys: ARPO and BARPO train about 3.3x faster on a CPU, SPO about 1.5x; on CUDA the
# graph is also captured and replayed ("reduce-overhead"), 8x over eager CUDA, yet still slower
# than the CPU (README, Speed). The eager `minibatch_step` stays the reference; a test checks
# that both give the same update.

# Compiling costs tens of seconds once per process (less when inductor's disk cache is warm);
# below this many steps it costs more than it saves.
COMPILE_MIN_STEPS = 200_000


def wants_compile(cfg):
    return cfg.compile == "on" or (cfg.compile == "auto" and cfg.total_steps >= COMPILE_MIN_STEPS)


class MinibatchLoss(nn.Module):
    """minibatch_loss as a module's forward: torch.func.functional_call differentiates that."""

    def __init__(self, agent):
        super().__init__()
        self.agent = agent

    def forward(self, *args):
        return minibatch_loss(self.agent, *args)


def functional_minibatch_step(loss_module, names, optimizer, lrs, mb, kappa, eps, cfg, robust):
    """minibatch_step as one function the compiler can trace: the gradient by torch.func instead
    of .backward(), the same clipping, and torch's own functional Adam on the optimizer's state."""
    params = optimizer_params(optimizer)
    grads, stats = torch.func.grad(lambda ps: torch.func.functional_call(
        loss_module, dict(zip(names, ps)), (mb, kappa, eps, cfg, robust)), has_aux=True)(params)
    total_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (cfg.max_grad_norm / (total_norm + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_
    grads = [g * scale for g in grads]
    first = 0
    for group, lr in zip(optimizer.param_groups, lrs):
        ps, gs = group["params"], grads[first:first + len(group["params"])]
        first += len(ps)
        state = [optimizer.state[p] for p in ps]
        beta1, beta2 = group["betas"]
        functional_adam(ps, gs, [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state],
                        [], [s["step"] for s in state], foreach=False, capturable=True, amsgrad=False,
                        beta1=beta1, beta2=beta2, lr=lr, weight_decay=0.0, eps=group["eps"],
                        maximize=False)
    return stats


def compiled_minibatch_step(device, log=print):
    """The fast path's copy of minibatch_step (same arguments, same update up to float rounding).
    Where torch.compile cannot work (no C++ compiler, an unsupported Python) its first call says
    so in one line and the eager minibatch_step is used from then on."""
    import torch._inductor.config
    torch._inductor.config.fallback_random = True  # the same random numbers as eagerly
    compiled = torch.compile(functional_minibatch_step, fullgraph=True,
                             mode="reduce-overhead" if device.type == "cuda" else None)
    loss_modules, fallback = {}, []

    def step(agent, optimizer, mb, kappa, eps, cfg, robust):
        if fallback:
            return minibatch_step(agent, optimizer, mb, kappa, eps, cfg, robust)
        if agent not in loss_modules:
            module = loss_modules[agent] = MinibatchLoss(agent)
            by_tensor = {p: name for name, p in module.named_parameters()}
            module.names = tuple(by_tensor[p] for p in optimizer_params(optimizer))
        for p in optimizer_params(optimizer):
            if not optimizer.state[p]:  # the state Adam keeps, made as Adam(fused=True) makes it
                state = dict(step=torch.zeros((), device=device), exp_avg=torch.zeros_like(p),
                             exp_avg_sq=torch.zeros_like(p))
                if device.type == "cuda":  # fixed addresses, so the CUDA graph updates them in place
                    for tensor in state.values():
                        torch._dynamo.mark_static_address(tensor)
                optimizer.state[p].update(state)
        lrs = [torch.tensor(group["lr"], device=device) for group in optimizer.param_groups]
        if device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        try:
            with torch.no_grad():  # Adam updates the parameters in place
                return compiled(loss_modules[agent], loss_modules[agent].names, optimizer, lrs, mb,
                                kappa, eps, cfg, robust)
        except Exception as e:  # compiling fails on the first call or not at all
            log(f"torch.compile is unavailable here ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0][:120]}); training without it")
            fallback.append(e)
            return minibatch_step(agent, optimizer, mb, kappa, eps, cfg, robust)

    return step


def train(cfg, envs, agent, obs_norm, device, metrics_path=None, log=print):
    """The whole training run: per iteration k pick kappa_k and eps_k, collect a rollout on clean
    observations, then run the bilevel update. Writes one metrics row per iteration."""
    optimizer = make_optimizer(agent, cfg)
    rollout = Rollout(envs, agent, obs_norm, cfg, device)
    iterations = cfg.total_steps // cfg.steps_per_iteration
    step = compiled_minibatch_step(device, log) if wants_compile(cfg) else minibatch_step
    fields = ["iteration", "env_steps", "wall_time_s", "sps", "episode_return", "kappa", "eps",
              "attack_kl", "surrogate", "value_loss"]
    csv_file = open(metrics_path, "w", newline="") if metrics_path else None
    writer = csv.DictWriter(csv_file, fields) if csv_file else None
    if writer:
        writer.writeheader()
    start = last_print = time.perf_counter()
    recent_return, rows = float("nan"), []
    try:
        for k in range(iterations):
            t0 = time.perf_counter()
            progress = k / iterations
            for group, lr in zip(optimizer.param_groups, (cfg.lr_policy, cfg.lr_value)):
                group["lr"] = lr * (1.0 - progress)  # linear annealing to 0
            kappa = attack_strength(cfg, progress)
            eps = epsilon(cfg, progress) if kappa > 0 else 0.0
            advantages, returns = rollout.collect()
            batch = Batch(rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1),
                          rollout.logp.flatten(0, 1), advantages.flatten(), returns.flatten())
            surr, value_loss, attack_kl = bilevel_update(agent, optimizer, batch, cfg, kappa, eps, step)
            if rollout.finished:
                recent_return = float(np.mean(rollout.finished[-10:]))
                rollout.finished = rollout.finished[-10:]
            now = time.perf_counter()
            row = dict(iteration=k + 1, env_steps=(k + 1) * cfg.steps_per_iteration,
                       wall_time_s=round(now - start, 3),
                       sps=round(cfg.steps_per_iteration / (now - t0), 1),
                       episode_return=round(recent_return, 2), kappa=round(kappa, 4),
                       eps=round(eps, 5), attack_kl=round(attack_kl, 6), surrogate=round(surr, 5),
                       value_loss=round(value_loss, 5))
            rows.append(row)
            if writer:
                writer.writerow(row)
                csv_file.flush()
            if now - last_print > 5 or k + 1 == iterations:
                last_print = now
                left = (now - start) / (k + 1) * (iterations - k - 1)
                log(f"it {k + 1}/{iterations} | steps {row['env_steps']:,} | {row['sps']:,.0f} steps/s"
                    f" | left {left / 60:.1f} min | return {recent_return:.1f} | kappa {kappa:.2f}"
                    f" | eps {eps:.4f} | attack KL {attack_kl:.2e}")
    finally:
        if csv_file:
            csv_file.close()
    return rows


# ============================================================================================
# 7. Evaluation: attacks on a frozen agent, including the learned optimal attack
# ============================================================================================

class VictimUnderAttack(gym.vector.VectorWrapper):
    """The learned optimal attack's environment (SA-RL, Zhang et al. 2021): a frozen victim inside.

    The attacker observes the victim's normalized observation o, acts u in [-1, 1]^dim, the victim
    sees o + eps * hardtanh(u) and acts deterministically, and the attacker receives minus the
    victim's reward. Training this with the same PPO (train()) gives the strongest known attack.
    """

    def __init__(self, envs, victim, obs_norm, eps, device):
        super().__init__(envs)
        dim = envs.single_observation_space.shape[0]
        self.single_observation_space = gym.spaces.Box(-10.0, 10.0, (dim,), np.float64)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (dim,), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.victim, self.obs_norm, self.eps, self.device = victim, obs_norm, eps, device
        self.act_low, self.act_high = envs.single_action_space.low, envs.single_action_space.high

    def reset(self, **kwargs):
        raw, info = self.env.reset(**kwargs)
        self.o = self.obs_norm(raw)
        return self.o, info

    @torch.no_grad()
    def step(self, u):
        o_hat = torch.as_tensor(self.o + self.eps * np.clip(u, -1.0, 1.0), dtype=torch.float32,
                                device=self.device)
        action = self.victim.mu(o_hat).cpu().numpy()
        raw, reward, term, trunc, info = self.env.step(np.clip(action, self.act_low, self.act_high))
        self.o = self.obs_norm(raw)
        if "final_obs" in info:  # the attacker's final observations are normalized ones too
            info["final_obs"] = info["final_obs"].copy()
            for i in np.flatnonzero(info["_final_obs"]):
                info["final_obs"][i] = self.obs_norm(info["final_obs"][i])
        return self.o, -reward, term, trunc, info


def train_optimal_attack(victim, obs_norm, env_id, eps, steps, seed, device, num_envs=8, log=print):
    """Train an attacker with PPO (SPO) on VictimUnderAttack; returns the attack function."""
    cfg = Config(env=env_id, algo="spo", total_steps=max(steps, 2048), seed=seed, num_envs=num_envs)
    envs = VictimUnderAttack(make_envs(env_id, num_envs), victim, obs_norm, eps, device)
    dim = envs.single_observation_space.shape[0]
    torch.manual_seed(seed)
    attacker, attacker_norm = Agent(dim, dim).to(device), ObsNormalizer(dim)
    victim.requires_grad_(False)
    try:
        train(cfg, envs, attacker, attacker_norm, device, log=lambda s: log("  [optimal attack] " + s))
    finally:
        victim.requires_grad_(True)
        envs.close()

    def attack(obs):
        u = attacker.mu(torch.as_tensor(attacker_norm(obs.cpu().numpy()), dtype=torch.float32,
                                        device=obs.device))
        return obs + eps * u.clamp(-1.0, 1.0)

    return attack


def make_attack(name, agent, eps, pgd_steps):
    """Gradient and noise attacks as functions o -> o_hat (the optimal one is trained separately)."""
    if name == "none" or eps == 0:
        return lambda obs: obs
    if name == "random":
        return lambda obs: obs + eps * (2 * torch.rand_like(obs) - 1)
    if name == "critic":
        return lambda obs: pgd_attack(obs, critic_objective(agent), eps, pgd_steps)
    if name == "mad":
        return lambda obs: pgd_attack(obs, mad_objective(agent, obs), eps, pgd_steps)
    raise ValueError(name)


def evaluate(agent, obs_norm, env_id, attack, episodes, seed, device):
    """Return of `episodes` episodes with the deterministic action mu(o_hat), normalizer frozen.
    Episode i always starts from reset(seed=seed + i), so every attack faces the same episodes,
    and torch is seeded too, so that random noise and PGD's random starts repeat."""
    torch.manual_seed(seed)
    envs = make_envs(env_id, episodes)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    raw, _ = envs.reset(seed=seed)
    returns, alive = np.zeros(episodes), np.ones(episodes, dtype=bool)
    while alive.any():
        obs = torch.as_tensor(obs_norm(raw), dtype=torch.float32, device=device)
        with torch.no_grad():
            action = agent.mu(attack(obs)).cpu().numpy()
        raw, reward, term, trunc, _ = envs.step(np.clip(action, low, high))
        returns += reward * alive
        alive &= ~(term | trunc)
    envs.close()
    return returns


def attack_suite(agent, obs_norm, env_id, eps, attacks, episodes, seed, device, pgd_steps=10,
                 optimal_steps=200_000, log=print):
    """Evaluate under each attack; returns {attack: {"mean", "std"}} and the worst attack's name."""
    table = {}
    for name in attacks:
        t0 = time.perf_counter()
        if name == "optimal" and eps > 0:
            log(f"training the optimal attacker for {optimal_steps:,} steps")
            attack = train_optimal_attack(agent, obs_norm, env_id, eps, optimal_steps, seed + 1,
                                          device, log=log)
        else:
            attack = make_attack("none" if name == "optimal" else name, agent, eps, pgd_steps)
        returns = evaluate(agent, obs_norm, env_id, attack, episodes, seed + 10_000, device)
        table[name] = {"mean": float(returns.mean()), "std": float(returns.std())}
        log(f"  {name:8s} {returns.mean():9.1f} +- {returns.std():7.1f}   ({time.perf_counter() - t0:.1f} s)")
    attacked = [a for a in table if a != "none"] or list(table)
    return table, min(attacked, key=lambda a: table[a]["mean"])


def print_table(result):
    print(f"\n{result['env']}  {result['algo']}  seed {result['seed']}  eps {result['eps']}"
          f"  ({result['episodes']} episodes, deterministic actions)")
    print(f"{'attack':10s} {'mean':>10s} {'std':>9s}")
    for name, r in result["returns"].items():
        mark = "  <- worst" if name == result["worst"] else ""
        print(f"{name:10s} {r['mean']:10.1f} {r['std']:9.1f}{mark}")


# ============================================================================================
# 8. Checkpoints, the run folder, main()
# ============================================================================================

def save_checkpoint(path, agent, obs_norm, cfg, obs_dim, act_dim, env_steps):
    """Weights, normalizer statistics and config as plain tensors and primitives (so that
    torch.load(weights_only=True) reads it), written to a temporary file and renamed: atomic."""
    state = {"format": "barpo-checkpoint-1", "agent": agent.state_dict(),
             "obs_mean": torch.as_tensor(obs_norm.mean), "obs_var": torch.as_tensor(obs_norm.var),
             "obs_count": float(obs_norm.count), "config": dataclasses.asdict(cfg),
             "obs_dim": obs_dim, "act_dim": act_dim, "env_steps": env_steps}
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, device, env_id=None):
    """Returns (agent, obs_norm, state); UsageError for a missing, broken or mismatched file."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} not found; give the checkpoint.pt of a barpo.py run")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if not (isinstance(state, dict) and state.get("format") == "barpo-checkpoint-1"):
            raise ValueError("not a barpo.py checkpoint")
        agent = Agent(state["obs_dim"], state["act_dim"]).to(device)
        agent.load_state_dict(state["agent"])
        obs_norm = ObsNormalizer(state["obs_dim"])
        obs_norm.mean, obs_norm.var = state["obs_mean"].cpu().numpy(), state["obs_var"].cpu().numpy()
        obs_norm.count = state["obs_count"]
    except Exception as e:  # torch raises many kinds for a truncated or foreign file
        raise UsageError(f"cannot read checkpoint {path} ({type(e).__name__}: {str(e)[:100]}); "
                         f"give an intact checkpoint.pt written by barpo.py")
    if env_id is not None and state["config"]["env"] != env_id:
        raise UsageError(f"checkpoint {path} is for {state['config']['env']}, not {env_id}; "
                         f"use a checkpoint of {env_id} or --env {state['config']['env']}")
    return agent, obs_norm, state


def check_dims(state, envs, path):
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    if (state["obs_dim"], state["act_dim"]) != (obs_dim, act_dim):
        raise UsageError(f"checkpoint {path} has observation/action size {state['obs_dim']}/"
                         f"{state['act_dim']} but the task has {obs_dim}/{act_dim}; use a "
                         f"checkpoint of this task")


def run_evaluation(agent, obs_norm, info, args, eps, device, out_dir):
    attacks = parse_attacks(args.attacks)
    table, worst = attack_suite(agent, obs_norm, info["env"], eps, attacks, args.episodes,
                                info["seed"], device, info["pgd_steps"], args.optimal_attack_steps)
    result = {**{k: info[k] for k in ("env", "algo", "seed", "total_steps")}, "eps": eps,
              "episodes": args.episodes, "command": "python " + shlex.join(sys.argv),
              "returns": table, "worst": worst}
    tmp = out_dir / "eval.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_dir / "eval.json")
    print_table(result)
    print(f"\nwrote {out_dir / 'eval.json'}")
    return result


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # The literature's tasks are the v4 ones; gymnasium suggests v5 at every start.
    warnings.filterwarnings("ignore", message=".*is out of date", category=DeprecationWarning)
    torch.set_num_threads(1)  # tiny networks: a second thread costs more than it gives on 2 cores
    if args.eval:
        device = pick_device(args.device)
        agent, obs_norm, state = load_checkpoint(args.eval, device, args.env)
        info = {**state["config"], "total_steps": state["env_steps"]}
        eps = info["eps"] if args.eps is None else args.eps
        check_eps(eps)
        check_eval_args(args)
        envs = make_envs(info["env"], 1)
        check_dims(state, envs, args.eval)
        envs.close()
        out_dir = Path(args.out or Path(args.eval).parent)
        out_dir.mkdir(parents=True, exist_ok=True)
        return run_evaluation(agent, obs_norm, info, args, eps, device, out_dir)

    cfg = config_from_args(args)
    device = pick_device(args.device)
    torch.manual_seed(cfg.seed)
    envs = make_envs(cfg.env, cfg.num_envs, cfg.vector_env)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent, obs_norm = Agent(obs_dim, act_dim).to(device), ObsNormalizer(obs_dim)
    if args.init:
        agent, obs_norm, state = load_checkpoint(args.init, device, cfg.env)
        check_dims(state, envs, args.init)
    out_dir = Path(args.out or f"runs/{cfg.env}-{cfg.algo}-seed{cfg.seed}")
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"{cfg.algo.upper()} on {cfg.env}, {cfg.total_steps:,} steps, eps {cfg.eps}, "
          f"device {device}, run folder {out_dir}")
    steps = cfg.total_steps // cfg.steps_per_iteration * cfg.steps_per_iteration
    try:
        rows = train(cfg, envs, agent, obs_norm, device, out_dir / "metrics.csv")
    except KeyboardInterrupt:
        done = len((out_dir / "metrics.csv").read_text().splitlines()) - 1  # a row per iteration
        save_checkpoint(out_dir / "checkpoint.pt", agent, obs_norm, cfg, obs_dim, act_dim,
                        max(done, 0) * cfg.steps_per_iteration)
        print(f"\ninterrupted: checkpoint of the agent so far saved to {out_dir / 'checkpoint.pt'}")
        raise SystemExit(130)
    finally:
        envs.close()
    save_checkpoint(out_dir / "checkpoint.pt", agent, obs_norm, cfg, obs_dim, act_dim, steps)
    print(f"trained {steps:,} steps in {rows[-1]['wall_time_s']:.0f} s; evaluating")
    info = {**dataclasses.asdict(cfg), "total_steps": steps}
    return run_evaluation(agent, obs_norm, info, args, cfg.eps, device, out_dir)


if __name__ == "__main__":
    try:
        main()
    except UsageError as e:
        print(f"barpo.py: error: {e}", file=sys.stderr)
        sys.exit(2)
