"""SPO, ARPO and BARPO in one file: an educational reference implementation of

    "On the Tension Between Optimality and Adversarial Robustness in Policy Optimization"
    (Li et al., arXiv 2512.01228, ICLR 2026).

Run it: `python barpo.py --env Hopper-v4` trains BARPO and attacks it; `--help` says the rest.

Read it top to bottom. Sections 1-7 are the method, in the order it runs, and end at a banner;
a reader who stops there has seen all of SPO, ARPO and BARPO. What follows the banner only runs
it: metrics and checkpoints, the compiled fast path, the evaluation attacks, the command line.

Paper notion                                      Name in this file
------------------------------------------------  ---------------------------------------------
observation o, ball B_eps(o) (L-inf, normalized)  `ObsNormalizer`, `eps`; clamps in the solvers
policy pi_theta, value V_phi; surrogate l_t       `Agent.policy`, `Agent.value`; `surrogate`
bilevel framework: max_theta V^{pi o nu(theta)}   `lower_level` (nu) + `minibatch_loss` (theta)
  s.t. nu(theta) = argmax_nu G(pi_theta, nu)
SPO: nu the identity                              `--algo spo`
ARPO: G = -V^{pi o nu}, the strongest adversary   `--algo arpo`: `strongest_adversary`, `pgd_attack`
  (reshaping effect, sticky deceptive FOSPs)        (its docstring)
BARPO: G = KL(pi(.|o) || pi(.|o_hat)), by SGLD    `--algo barpo`: `kl_adversary`, `sgld_attack`
  (Theorem 4.1: value drop >= c KL + O(KL^1.5))     (its docstring)
outer level, inner solution held fixed; ISA-MDP   `minibatch_loss` and its docstring
SPO guidance, weight kappa; the four ablation     `--kappa` (default 0, measured: results/kappa);
  configurations                                    `--algo arpo|barpo` with `--kappa 0` or `1`
eps ramp; published per-task settings             `epsilon`; `TASK_SETTINGS`, `task_config`
robust return (worst case over six attacks)       `ATTACKS`, `attack_suite`

What comes from the paper, what from the code it builds on (SA-PPO, CAR-PPO) and what is this
project's choice (the default kappa, the robust term as a plain mean, PGD's shrinking steps, a
time-limit cut bootstrapped from the critic): README, "What is reconstructed"; each choice is said
where it is made.
"""

import argparse
import contextlib
import copy
import csv
import dataclasses
import functools
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

if __name__ == "__main__":  # Ctrl-C while torch imports: one line, not an import's traceback
    signal.signal(signal.SIGINT, lambda *_: (print("\ninterrupted", file=sys.stderr), os._exit(130)))

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.adam import adam as functional_adam


# ==== 1. Configuration ======================================================================

# eps of the L-infinity ball on the normalized observation, per task (SA-PPO / CAR-PPO papers).
TASK_EPS = {"Hopper": 0.075, "Walker2d": 0.05, "HalfCheetah": 0.15, "Ant": 0.15}

# The per-task settings of the published SA-PPO / CAR-PPO configs, as Config fields; "robust"
# holds what ARPO and BARPO use where it differs from PPO's. They hold for the ablation's
# configurations too, and each can be overridden by its flag.
TASK_SETTINGS = {
    "Hopper": dict(lr_policy=3e-4, lr_value=2.5e-4, value_clip=False, init_std=1.0),
    "Walker2d": dict(lr_policy=4e-4, lr_value=3e-4, value_clip=True, init_std=1.0),
    "HalfCheetah": dict(lr_policy=3e-4, lr_value=1e-4, value_clip=True, init_std=0.5,
                        robust=dict(lr_policy=1e-4, lr_value=1e-3, entropy_coef=1e-4)),
    "Ant": dict(lr_policy=5e-5, lr_value=1e-5, value_clip=True, init_std=1.0,
                total_steps=4882 * 2048),
}


@dataclasses.dataclass
class Config:
    env: str = "Hopper-v4"
    algo: str = "barpo"                  # spo | arpo | barpo: which lower level (section 5)
    kappa: float = 0.0                   # weight of SPO guidance in the upper level (section 6)
    total_steps: int = 976 * 2048        # trained in whole iterations: 1,998,848 steps
    seed: int = 0
    eps: float = 0.075                   # radius of the ball; task_config takes TASK_EPS
    # PPO, as the published configs (Hopper's here; task_config sets each task's)
    steps_per_iteration: int = 2048
    num_envs: int = 1                    # one actor, as published (results/actors)
    epochs: int = 10
    minibatches: int = 32
    clip: float = 0.2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    lr_policy: float = 3e-4
    lr_value: float = 2.5e-4
    value_clip: bool = False
    init_std: float = 1.0
    entropy_coef: float = 0.0
    max_grad_norm: float = math.inf      # inf: no gradient clipping, as published
    eps_ramp: float = 0.75               # fraction of training over which eps goes 0 -> eps
    pgd_steps: int = 10                  # steps of every lower-level solver, PGD and SGLD
    # How the run is carried out (sections 8 on), not what it computes
    vector_env: str = "sync"             # sync | async (make_envs)
    device: str = "auto"
    compile: str = "auto"                # on | off | auto: on for runs of COMPILE_MIN_STEPS or more
    checkpoint_every: int = 25           # iterations between checkpoints (about 51k steps)
    evaluation: dict = dataclasses.field(default_factory=dict)  # the end-of-run attacks (CLI)

    @property
    def iterations(self):
        return self.total_steps // self.steps_per_iteration


def task_config(env="Hopper-v4", algo="barpo", **overrides):
    """The Config of a task at its published settings for the method, with overrides on top; a
    task outside the table keeps Config's own defaults (Hopper's) and needs eps."""
    published = dict(TASK_SETTINGS.get(env.split("-")[0], {}))
    robust = published.pop("robust", {})
    settings = {**published, **(robust if algo != "spo" else {})}
    if env.split("-")[0] in TASK_EPS:
        settings["eps"] = TASK_EPS[env.split("-")[0]]
    return Config(env=env, algo=algo, **{**settings, **overrides})


# ==== 2. Observations and rewards, normalized =============================================

class ObsNormalizer:
    """o = clip((s - mean) / std, -10, 10) with running mean and variance of the states seen.

    Owned rather than gymnasium's NormalizeObservation wrapper: the attacker works on o, the
    statistics must be frozen at evaluation and saved in the checkpoint, so they live here.
    """

    def __init__(self, dim):
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4

    def update(self, x):
        """Merge the moments of a batch x into the running ones (Chan et al.): with n_a, n_b
        samples and delta = mean_b - mean_a, the pooled mean is mean_a + delta n_b / n and the
        pooled sum of squared deviations is M_a + M_b + delta^2 n_a n_b / n."""
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

    def __call__(self, reward, ended):
        self.ret = self.ret * self.gamma + reward
        self.stats.update(self.ret[:, None])
        self.ret[ended] = 0.0
        return np.clip(reward / np.sqrt(self.stats.var[0] + 1e-8), -10.0, 10.0)


# ==== 3. Actor and critic ===================================================================

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

    def __init__(self, obs_dim, act_dim, init_std=1.0):
        super().__init__()
        self.mu = mlp(obs_dim, act_dim, out_gain=0.01)
        self.log_std = nn.Parameter(torch.full((act_dim,), math.log(init_std)))
        self.critic = mlp(obs_dim, 1, out_gain=1.0)

    def policy(self, obs):
        return torch.distributions.Normal(self.mu(obs), self.log_std.exp(), validate_args=False)

    def value(self, obs):
        return self.critic(obs).squeeze(-1)


# ==== 4. Rollout, GAE, the surrogate ========================================================

class Rollout:
    """Collects steps_per_iteration transitions on clean observations; keeps env state between
    iterations. Tensors have shape (T, num_envs, ...)."""

    def __init__(self, envs, agent, obs_norm, cfg):
        self.envs, self.agent, self.obs_norm, self.cfg = envs, agent, obs_norm, cfg
        self.device = device = next(agent.parameters()).device
        self.T, n = cfg.steps_per_iteration // envs.num_envs, envs.num_envs
        obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
        self.obs = torch.zeros(self.T, n, obs_dim, device=device)
        self.actions = torch.zeros(self.T, n, act_dim, device=device)
        self.logp, self.rewards, self.dones, self.values = (
            torch.zeros(self.T, n, device=device) for _ in range(4))
        self.reward_scaler = RewardScaler(n, cfg.gamma)
        self.raw_obs, _ = envs.reset(seed=cfg.seed)
        self.episode_return, self.finished = np.zeros(n), []  # finished: returns of ended episodes

    @torch.no_grad()
    def collect(self):
        """One iteration's transitions; returns the advantages and the critic's targets."""
        for t in range(self.T):
            self.obs_norm.update(self.raw_obs)
            obs = to_tensor(self.obs_norm(self.raw_obs), self.device)
            dist = self.agent.policy(obs)
            action = dist.sample()
            self.obs[t], self.actions[t], self.values[t] = obs, action, self.agent.value(obs)
            self.logp[t] = dist.log_prob(action).sum(-1)
            self.raw_obs, reward, term, trunc, info = self.envs.step(action.cpu().numpy())
            ended = term | trunc
            self.episode_return += reward
            self.finished += list(self.episode_return[ended])
            self.episode_return[ended] = 0.0
            scaled = to_tensor(self.reward_scaler(reward, ended), self.device)
            # A time-limit cut is not a real end: bootstrap it, r + gamma * V(s_final).
            for i in np.flatnonzero(trunc & ~term):
                final = to_tensor(self.obs_norm(info["final_obs"][i]), self.device)
                scaled[i] += self.cfg.gamma * self.agent.value(final)
            self.rewards[t], self.dones[t] = scaled, to_tensor(ended, self.device)
        last_value = self.agent.value(to_tensor(self.obs_norm(self.raw_obs), self.device))
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


# ==== 5. The lower level: the adversary nu(theta) of each method ============================
#
# The paper's framework: max_theta V^{pi_theta o nu(theta)} s.t. nu(theta) = argmax_nu G(pi_theta, nu),
# pi o nu acting on the o_hat = nu(o) in B_eps(o) the adversary shows it. The method is the choice
# of G: none (nu the identity) is SPO; G = -V^{pi o nu}, the strongest adversary, is ARPO (PPO
# estimates V by the surrogate, so its adversary minimizes the surrogate at o_hat); the KL
# surrogate G = KL(pi(.|o) || pi(.|o_hat)) is BARPO. Both are solved per sample, against the
# current theta, by sign-gradient steps in the ball.

SGLD_BETA = 1e-5  # SGLD's temperature in SA-PPO's and CAR-PPO's training


def pgd_attack(obs, objective, eps, steps):
    """Approximately minimize objective(o_hat) (per sample) over B_eps(obs) = {|o_hat - obs|_inf <= eps}.

    To first order objective(o + d) ~ objective(o) + g.d, minimized over the L-infinity ball by
    d = -eps sign(g); PGD takes that step in pieces, re-linearizing each time, and projects back
    by a per-coordinate clamp. The start is uniform in the ball, as CAR-PPO's. Our departure:
    step_i = 4 eps (K - i) / (K (K + 1)), i = 0..K-1 (CAR-PPO's: eps / K), adding up to 2 eps, so the
    path can cross the ball from any start, and shrinking, so it settles at a minimum inside the
    ball rather than jumping around it. eps may be a 0-d tensor; at eps = 0, o_hat = obs.
    """
    lo, hi = obs - eps, obs + eps
    o_hat = obs + eps * (2 * torch.rand_like(obs) - 1)
    for i in range(steps):
        step_size = 4 * eps * (steps - i) / (steps * (steps + 1))
        grad = input_gradient(lambda x: objective(x).sum(), o_hat)
        o_hat = torch.min(torch.max(o_hat - step_size * grad.sign(), lo), hi)
    return o_hat


def sgld_attack(obs, objective, eps, steps, beta=SGLD_BETA):
    """Approximately maximize objective(o_hat) (per sample) over B_eps(obs) by stochastic
    gradient Langevin dynamics, as SA-PPO and CAR-PPO solve their KL problems.

    Langevin dynamics x <- x + alpha grad f(x) + sqrt(2 alpha beta) xi, xi ~ N(0, I), samples from
    exp(f / beta): at a small temperature beta it settles at the maxima of f, the noise carrying
    it off flat points. Here the drift is a sign step of alpha = eps / K (as PGD's), the noise
    shrinks as 1 / (k + 2), each step is clamped to the ball. The start is obs + alpha sign(xi):
    the KL has zero gradient at o_hat = obs, so the solver must not start there.
    """
    alpha = eps / steps
    lo, hi = obs - eps, obs + eps
    o_hat = obs + alpha * torch.randn_like(obs).sign()
    for k in range(steps):
        grad = input_gradient(lambda x: objective(x).sum(), o_hat)
        noise = (2 * alpha * beta) ** 0.5 / (k + 2) * torch.randn_like(obs)
        o_hat = torch.min(torch.max(o_hat + alpha * (grad + noise).sign(), lo), hi)
    return o_hat


def strongest_adversary(agent, mb, adv, clip):
    """ARPO's G on a minibatch mb with normalized advantages adv, to be minimized: the surrogate
    l_t(theta; o_hat), PPO's estimate of the value through the adversary (CAR-PPO's inner problem).

    The reshaping effect (the paper's Section 3): V^{pi o nu*} <= V^pi, with a large gap where pi is
    vulnerable and a small one where it is robust. So the strongest adversary sinks vulnerable,
    high-return policies and leaves robust, low-return ones standing as local maxima behind
    valleys gradient ascent cannot cross (the robust policy space has cut points): sticky,
    deceptive stationary policies, robust but of low return (Ant: 68% below SPO in the paper).
    """
    return lambda o_hat: surrogate_at(agent, o_hat, mb.actions, mb.old_logp, adv, clip)


def kl_adversary(agent, obs):
    """BARPO's G on a minibatch, to be maximized: KL(pi(.|o) || pi(.|o_hat)) (`gaussian_kl`).

    Theorem 4.1: for an adversary strong enough, reached in K gradient steps, V^pi(s) - V^{pi o nu}(s)
    >= 2 delta / (lambda_max(F) K) KL + O(KL^{3/2}), F the Fisher information of log pi with respect
    to the perturbation, delta > 0 a constant of that adversary. To first order, an o_hat that
    moves the policy more costs more value: maximizing the KL is a surrogate of minimizing the
    value that is computable and differentiable. And a milder one: it aims at what the policy does,
    not at the return, so it lowers the landscape less unevenly and carves fewer sticky valleys.
    """
    with torch.no_grad():
        mu_clean = agent.mu(obs)
    return lambda o_hat: gaussian_kl(mu_clean, agent.mu(o_hat), agent.log_std.detach())


def lower_level(agent, mb, adv, eps, cfg):
    """o_hat_t = nu(o_t; theta) for every sample of a minibatch, against the current theta: o itself
    for SPO, PGD minimizing the surrogate for ARPO, SGLD maximizing the KL for BARPO."""
    if cfg.algo == "arpo":
        return pgd_attack(mb.obs, strongest_adversary(agent, mb, adv, cfg.clip), eps, cfg.pgd_steps)
    if cfg.algo == "barpo":
        return sgld_attack(mb.obs, kl_adversary(agent, mb.obs), eps, cfg.pgd_steps)
    return mb.obs


# ==== 6. The upper level: the surrogate at o_hat, SPO guidance, the PPO epochs ==============

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
    values: torch.Tensor               # V(o_t) at collection, the centre of value clipping


def normalized(x):
    return (x - x.mean()) / (x.std() + 1e-8)


def realized_attack_kl(agent, obs, o_hat):
    """The adversary's measured strength: mean KL(pi(.|o) || pi(.|o_hat)) over the samples."""
    with torch.no_grad():
        return gaussian_kl(agent.mu(obs), agent.mu(o_hat), agent.log_std).mean()


def value_loss(agent, mb, cfg):
    """The critic's regression 0.5 (V(o) - R)^2 on clean observations. With value clipping (the
    published configs but Hopper's), PPO's pessimistic max against V kept within clip of the value
    recorded at collection, so one update does not carry V far from where the advantages came."""
    v = agent.value(mb.obs)
    loss = (v - mb.returns) ** 2
    if cfg.value_clip:
        v_clipped = mb.values + (v - mb.values).clamp(-cfg.clip, cfg.clip)
        loss = torch.max(loss, (v_clipped - mb.returns) ** 2)
    return 0.5 * loss.mean()


def minibatch_loss(agent, mb, eps, cfg):
    """The loss of one minibatch, and (objective, value loss, attack KL) for the metrics.

    The upper level, the same for every method (o_hat = o for SPO, whose kappa is 0):
        maximize  mean_t l_t(theta; o_hat_t)  +  kappa * mean_t l_t(theta; o_t)
    - The inner solution is held fixed, as in the paper: the terms of the exact gradient through
      d o_hat / d theta are dropped (o_hat comes with no graph back to theta). For ARPO, whose G is
      the very surrogate maximized here, Danskin's theorem makes them vanish at an exact minimizer;
      for BARPO they do not, so its stationary points are those of the paper's approximation.
    - SPO guidance: the second term is SPO's objective; weight kappa pulls theta towards natural
      return across the valleys the adversary carved. kappa = 0, the bare framework, drops it. It is
      the default: of kappa 0, 1 and 10, it had the best worst case among those within 90% of the
      best natural return, on Hopper and on Walker2d (results/kappa).
    - Global optima are kept (ISA-MDP): if no o_hat in B_eps(o) changes the Bellman-optimal action,
      pi* acts as well through every adversary in the ball and maximizes both terms for every G:
      SPO, ARPO and BARPO with any kappa share their optimum and differ in the stationary points
      on the way. The critic learns on clean observations, on the policy's minibatches (published:
      first, with its own Adam; the networks are separate, so only the minibatch order differs).
    """
    adv = normalized(mb.advantages)
    o_hat = lower_level(agent, mb, adv, eps, cfg)
    attack_kl = (realized_attack_kl(agent, mb.obs, o_hat) if cfg.algo != "spo"
                 else torch.zeros((), device=mb.obs.device))
    dist = agent.policy(o_hat)
    objective = surrogate(dist.log_prob(mb.actions).sum(-1), mb.old_logp, adv, cfg.clip).mean()
    if cfg.kappa > 0:
        objective = objective + cfg.kappa * surrogate_at(
            agent, mb.obs, mb.actions, mb.old_logp, adv, cfg.clip).mean()
    if cfg.entropy_coef > 0:  # HalfCheetah's robust config: sum_i log sigma_i + const
        objective = objective + cfg.entropy_coef * dist.entropy().sum(-1).mean()
    critic = value_loss(agent, mb, cfg)
    return critic - objective, torch.stack([objective.detach(), critic.detach(), attack_kl])


def minibatch_update(agent, optimizer, mb, eps, cfg):
    """One upper-level step: the minibatch loss, its gradient (clipped to max_grad_norm if that is
    finite; the published configs do not clip), Adam."""
    loss, stats = minibatch_loss(agent, mb, eps, cfg)
    optimizer.zero_grad()
    loss.backward()
    if cfg.max_grad_norm < math.inf:
        nn.utils.clip_grad_norm_(optimizer_params(optimizer), cfg.max_grad_norm)
    optimizer.step()
    return stats


def bilevel_update(agent, optimizer, batch, eps, cfg, update=minibatch_update):
    """PPO epochs in which every minibatch solves the lower level, then takes an upper-level step
    (`update`: minibatch_update, or the fast path's compiled copy of it). Returns the mean
    objective, value loss and realized attack KL."""
    n = batch.obs.shape[0]
    sums = torch.zeros(3, device=batch.obs.device)
    for _ in range(cfg.epochs):
        for idx in torch.randperm(n, device=batch.obs.device).split(n // cfg.minibatches):
            sums += update(agent, optimizer, Batch(*(x[idx] for x in batch)), eps, cfg)
    return (sums / (cfg.epochs * cfg.minibatches)).tolist()


# ==== 7. One iteration of the bilevel loop ==================================================

def iteration(cfg, k, rollout, optimizer, update=minibatch_update):
    """Iteration k (of cfg.iterations): the learning rates and eps_k follow their schedules, a
    rollout is collected on clean observations (the adversary acts only inside the loss), and
    the PPO epochs solve the lower level and step the upper level on every minibatch. Returns
    the metrics."""
    progress = k / cfg.iterations
    for group, lr in zip(optimizer.param_groups, (cfg.lr_policy, cfg.lr_value)):
        group["lr"] = lr * (1.0 - progress)               # learning rates anneal linearly to 0
    eps = epsilon(cfg, progress) if cfg.algo != "spo" else 0.0
    advantages, returns = rollout.collect()
    batch = Batch(rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1), rollout.logp.flatten(0, 1),
                  advantages.flatten(), returns.flatten(), rollout.values.flatten())
    eps_tensor = torch.tensor(eps, device=rollout.device)  # a tensor: new values do not recompile
    surr, critic, attack_kl = bilevel_update(rollout.agent, optimizer, batch, eps_tensor, cfg, update)
    return dict(kappa=cfg.kappa, eps=eps, attack_kl=attack_kl, surrogate=surr, value_loss=critic)


# ############################################################################################
#
#   THE METHOD ENDS HERE. Sections 1-7 are all of SPO, ARPO and BARPO.
#
#   What follows only runs it:
#     8. the training run: environments, metrics, progress, checkpoints and resuming
#     9. the fast path: the same minibatch update, compiled
#    10. evaluation: the attacks on a frozen agent, and the robust return
#    11. the command line
#
# ############################################################################################

# ==== 8. The training run: environments, metrics, progress, checkpoints, resuming ==========

class InputError(ValueError):
    """Input this library cannot use (a task, a checkpoint, a setting); the message says why."""


def make_envs(env_id, num_envs, vectorization="sync"):
    """A gymnasium vector env of a task with 1-D Box observations and Box actions, clipped to the
    task's bounds (ClipAction: the Gaussian's samples are not). SAME_STEP autoreset: a finished env
    resets inside the same step(), its last observation in info["final_obs"]."""
    try:
        with warnings.catch_warnings():  # the literature's tasks are v4; gymnasium suggests v5
            warnings.filterwarnings("ignore", message=".*is out of date", category=DeprecationWarning)
            envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=vectorization,
                                vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                                wrappers=[clip_box_actions])
    except gym.error.DependencyNotInstalled as e:  # a gym.error.Error too: caught first
        raise InputError(f"{env_id} needs a package that is not installed ({e})")
    except gym.error.Error as e:
        raise InputError(f"unknown task '{env_id}' ({e})")
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        problem = f"observation space {obs_space}; the attacks need a 1-D Box (a vector of numbers)"
    elif not isinstance(act_space, gym.spaces.Box):
        problem = f"action space {act_space}; these methods need a Box (continuous actions)"
    else:
        return envs
    envs.close()
    raise InputError(f"{env_id} has {problem}")


def clip_box_actions(env):
    return gym.wrappers.ClipAction(env) if isinstance(env.action_space, gym.spaces.Box) else env


def to_tensor(x, device):
    """A float32 tensor of an array (gymnasium hands out float64 numpy arrays)."""
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)


METRICS = ["iteration", "env_steps", "wall_time_s", "sps", "episode_return", "kappa", "eps",
           "attack_kl", "surrogate", "value_loss"]
ROUNDING = {"kappa": 4, "eps": 5, "attack_kl": 6, "surrogate": 5, "value_loss": 5}
CHECKPOINT_FORMAT = "barpo-checkpoint-3"
# Checkpoints of the earlier formulation, whose BARPO adversary minimized
# kappa l + (1 - kappa) KL by PGD; they load for evaluation, and their records say what they are.
EARLIER = ("barpo-checkpoint-1", "barpo-checkpoint-2")
EARLIER_FORMULATION = "earlier formulation: PGD minimizing kappa l + (1 - kappa) KL"


def one_thread(fn):
    """Run fn with one torch thread: the networks are tiny, a second thread costs more than it
    gives, and threads that wait on each other on shared cores can make a call many times slower.
    Every entry point of the library does this, so a notebook is as fast as the command line."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper


def make_optimizer(agent, cfg):
    return torch.optim.Adam([
        {"params": [*agent.mu.parameters(), agent.log_std], "lr": cfg.lr_policy},
        {"params": agent.critic.parameters(), "lr": cfg.lr_value}], eps=1e-5, fused=True)


def optimizer_params(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


@one_thread
def train(cfg, envs, agent, obs_norm, *, run_dir=None, resume=None, stop=None, log=print):
    """`iteration` after iteration until cfg.total_steps, or until stop(rows) is True (the learned
    attackers' plateau rule, the command line's Ctrl-C); returns this call's metrics rows. run_dir
    gets metrics.csv and, every cfg.checkpoint_every iterations and at the end, checkpoint.pt;
    resume, such a state, goes on exactly as if training had not stopped (MuJoCo, sync envs)."""
    optimizer = make_optimizer(agent, cfg)
    rollout = Rollout(envs, agent, obs_norm, cfg)
    update = minibatch_update
    if wants_compile(cfg):
        log("compiling the minibatch update with torch.compile (tens of seconds, once per process)")
        update = compiled_minibatch_update(rollout.device, log)
    first = restore_training(resume, rollout, optimizer, cfg) if resume else 0
    elapsed = resume["wall_time_s"] if resume else 0.0
    start = last_print = time.perf_counter()
    rows, durations = [], []
    metrics_file = open_metrics(run_dir / "metrics.csv", first) if run_dir else contextlib.nullcontext()
    with metrics_file as metrics:
        for k in range(first, cfg.iterations):
            began = time.perf_counter()
            stats = iteration(cfg, k, rollout, optimizer, update)
            now = time.perf_counter()
            durations.append(now - began)
            rollout.finished = rollout.finished[-10:]
            recent = float(np.mean(rollout.finished)) if rollout.finished else math.nan
            rows.append({"iteration": k + 1, "env_steps": (k + 1) * cfg.steps_per_iteration,
                         "wall_time_s": round(elapsed + now - start, 3),
                         "sps": round(cfg.steps_per_iteration / (now - began), 1),
                         "episode_return": round(recent, 2),
                         **{key: round(stats[key], digits) for key, digits in ROUNDING.items()}})
            if metrics:
                csv.DictWriter(metrics, METRICS).writerow(rows[-1])
                metrics.flush()
            last = k + 1 == cfg.iterations or (stop is not None and stop(rows))
            if run_dir and (last or (k + 1) % cfg.checkpoint_every == 0):
                state = training_state(cfg, rollout, optimizer, rows[-1])
                save_checkpoint(run_dir / "checkpoint.pt", state)
            if now - last_print > 5 or last:
                last_print = now
                log(progress_line(cfg, rows[-1], durations))
            if last:
                break
    return rows


def progress_line(cfg, row, durations):
    """The time left is judged from the iterations after the first two (the first compiles the
    fast path); before there are any, none is printed."""
    line = (f"it {row['iteration']:,}/{cfg.iterations:,} | steps {row['env_steps']:,} | "
            f"{row['sps']:,.0f} steps/s")
    iterations_left = cfg.iterations - row["iteration"]
    if iterations_left == 0 or len(durations) > 2:
        left = iterations_left * np.mean(durations[2:][-50:]) if iterations_left else 0.0
        line += f" | left {left / 60:.1f} min"
    line += f" | return {row['episode_return']:.1f}"
    if cfg.algo != "spo":  # SPO's (and a learned attacker's) eps and attack KL are 0
        line += f" | eps {row['eps']:.4f} | attack KL {row['attack_kl']:.2e}"
    return line


def open_metrics(path, keep_rows):
    """metrics.csv for appending, holding the rows of the first keep_rows iterations (those the
    checkpoint holds: a run killed between checkpoints wrote more)."""
    if keep_rows:  # as bytes: text mode would turn the csv module's \r\n into \n
        path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:keep_rows + 1]))
    else:
        with open(path, "w", newline="") as f:
            csv.DictWriter(f, METRICS).writeheader()
    return open(path, "a", newline="")


def training_state(cfg, rollout, optimizer, row):
    """Everything a checkpoint needs to resume exactly, as plain tensors and primitives (so that
    torch.load(weights_only=True) reads it); saved at once, so nothing needs copying."""
    agent, scaler = rollout.agent, rollout.reward_scaler
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state()
    where = {"raw_obs": torch.as_tensor(rollout.raw_obs), "finished": [float(x) for x in rollout.finished],
             "episode_return": torch.as_tensor(rollout.episode_return),
             "reward_stats": normalizer_state(scaler.stats), "reward_ret": torch.as_tensor(scaler.ret)}
    return {"format": CHECKPOINT_FORMAT, "agent": agent.state_dict(), "config": dataclasses.asdict(cfg),
            "obs_norm": normalizer_state(rollout.obs_norm), "env_steps": row["env_steps"],
            "obs_dim": agent.mu[0].in_features, "act_dim": agent.log_std.numel(),
            "training": {"iteration": row["iteration"], "wall_time_s": row["wall_time_s"],
                         "optimizer": optimizer.state_dict(), "rollout": where,
                         "envs": env_state(rollout.envs), "rng": rng}}


def restore_training(state, rollout, optimizer, cfg):
    """Put training back where `training_state` found it; returns the next iteration."""
    optimizer.load_state_dict(state["optimizer"])
    saved = state["rollout"]
    rollout.raw_obs, rollout.episode_return = saved["raw_obs"].numpy(), saved["episode_return"].numpy()
    rollout.finished = list(saved["finished"])
    rollout.reward_scaler.stats = normalizer_from_state(saved["reward_stats"])
    rollout.reward_scaler.ret = saved["reward_ret"].numpy()
    if state["envs"] is not None and env_state(rollout.envs) is not None:
        set_env_state(rollout.envs, state["envs"])
    else:  # no simulator state to restore (async envs, other simulators): new episodes
        rollout.raw_obs, _ = rollout.envs.reset(seed=cfg.seed + state["iteration"])
        rollout.episode_return[:] = 0.0
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng"]["cuda"])
    return state["iteration"]


def normalizer_state(norm):
    return {"mean": torch.as_tensor(norm.mean), "var": torch.as_tensor(norm.var),
            "count": float(norm.count)}


def normalizer_from_state(state):
    norm = ObsNormalizer(len(state["mean"]))
    norm.mean, norm.var = state["mean"].cpu().numpy(), state["var"].cpu().numpy()
    norm.count = state["count"]
    return norm


def env_state(envs):
    """What sync MuJoCo envs need to go on exactly where they are: each simulation's integration
    state, time-limit counter and random generator. None for other envs."""
    states = []
    for env in getattr(envs, "envs", [None]):
        sim = getattr(env, "unwrapped", None)
        if not hasattr(sim, "data"):
            return None
        import mujoco  # here, not at the top: other simulators' tasks run without it
        state = np.empty(mujoco.mj_stateSize(sim.model, mujoco.mjtState.mjSTATE_INTEGRATION))
        mujoco.mj_getState(sim.model, sim.data, state, mujoco.mjtState.mjSTATE_INTEGRATION)
        states.append({"sim": torch.as_tensor(state), "elapsed": env.get_wrapper_attr("_elapsed_steps"),
                       "rng": sim.np_random.bit_generator.state})
    return states


def set_env_state(envs, states):
    import mujoco
    for env, state in zip(envs.envs, states):
        sim = env.unwrapped
        mujoco.mj_setState(sim.model, sim.data, state["sim"].numpy(), mujoco.mjtState.mjSTATE_INTEGRATION)
        env.set_wrapper_attr("_elapsed_steps", state["elapsed"])
        sim.np_random.bit_generator.state = state["rng"]


def save_checkpoint(path, state):
    """Write to a temporary file and rename it: a crash never leaves half a checkpoint."""
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, env_id=None, device="cpu"):
    """Returns (agent, obs_norm, state) of a checkpoint.pt; InputError for a missing, broken or
    foreign file, an agent whose sizes do not fit its task, or (with env_id) one of another task.
    state["config"] is the run's Config, state["env_steps"] how far it trained."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises many kinds for a truncated or foreign file
        raise InputError(f"{path} is not a checkpoint that barpo.py wrote ({type(e).__name__} "
                         f"while reading it)")
    if not isinstance(state, dict) or state.get("format") not in (CHECKPOINT_FORMAT, *EARLIER):
        raise InputError(f"{path} is a torch file but not a checkpoint that barpo.py wrote")
    if state["format"] in EARLIER:
        state["config"]["formulation"] = EARLIER_FORMULATION
    if state["format"] == "barpo-checkpoint-1":  # no training state
        state["obs_norm"] = {k: state["obs_" + k] for k in ("mean", "var", "count")}
    task = state["config"]["env"]
    if env_id is not None and task != env_id:
        raise InputError(f"{path} is an agent for {task}, not for {env_id}")
    agent = Agent(state["obs_dim"], state["act_dim"]).to(device)
    agent.load_state_dict(state["agent"])
    with contextlib.closing(make_envs(task, 1)) as envs:
        check_sizes(agent, envs, task)
    return agent, normalizer_from_state(state["obs_norm"]), state


# ==== 9. The fast path: the same minibatch update, compiled =================================
#
# A minibatch is 64 samples through 64x64 networks, and the robust update runs 10 PGD or SGLD
# steps on it: eagerly, nearly all the time is Python and framework overhead per tiny operation.
# torch.compile traces the whole update (lower level, loss, gradient, clipping, Adam) into one
# graph of fused kernels: about 2.7x for ARPO, 2x for BARPO, 1.4x for SPO on a CPU (README,
# Speed). It asks of the method only that eps be a 0-d tensor (no recompiling as it ramps) and
# that the solvers' input gradient be torch.func.grad while compiling (`input_gradient`). The
# eager `minibatch_update` stays the reference; a test checks that both agree.

COMPILE_MIN_STEPS = 200_000  # compiling costs tens of seconds once; shorter runs do not repay it


def wants_compile(cfg):
    return cfg.compile == "on" or (cfg.compile == "auto" and cfg.total_steps >= COMPILE_MIN_STEPS)


def input_gradient(f, x):
    """d f / d x for a scalar f, without touching the gradients of any parameter."""
    if torch.compiler.is_compiling():  # the fast path's spelling of the same derivative (section 9)
        return torch.func.grad(f)(x).detach()
    with torch.enable_grad():  # evaluation attacks run under no_grad
        x = x.detach().requires_grad_(True)
        return torch.autograd.grad(f(x), x)[0]


class MinibatchLoss(nn.Module):
    """minibatch_loss as a module's forward: torch.func.functional_call differentiates that."""

    def __init__(self, agent, names):
        super().__init__()
        self.agent, self.names = agent, names  # names: the optimizer's parameters, in its order

    def forward(self, mb, eps, cfg):
        return minibatch_loss(self.agent, mb, eps, cfg)


def functional_minibatch_update(loss_module, optimizer, lrs, mb, eps, cfg):
    """minibatch_update as one traceable function: the gradient by torch.func instead of
    .backward(), the same clipping, and torch's own functional Adam on the optimizer's state."""
    params = optimizer_params(optimizer)
    with torch.no_grad():  # torch.func.grad differentiates all the same; Adam updates in place
        grads, stats = torch.func.grad(lambda ps: torch.func.functional_call(
            loss_module, dict(zip(loss_module.names, ps)), (mb, eps, cfg)), has_aux=True)(params)
        if cfg.max_grad_norm < math.inf:
            total_norm = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
            scale = (cfg.max_grad_norm / (total_norm + 1e-6)).clamp(max=1.0)  # as clip_grad_norm_
            grads = [g * scale for g in grads]
        first = 0
        for group, lr in zip(optimizer.param_groups, lrs):
            ps, gs = group["params"], grads[first:first + len(group["params"])]
            first += len(ps)
            state = [optimizer.state[p] for p in ps]
            functional_adam(ps, gs, [s["exp_avg"] for s in state], [s["exp_avg_sq"] for s in state],
                            [], [s["step"] for s in state], foreach=False, capturable=True,
                            amsgrad=False, beta1=group["betas"][0], beta2=group["betas"][1], lr=lr,
                            weight_decay=0.0, eps=group["eps"], maximize=False)
    return stats


def compiled_minibatch_update(device, log=print):
    """The fast path's minibatch_update: same arguments, same update up to float rounding."""
    def eager(loss_module, optimizer, lrs, mb, eps, cfg):
        return minibatch_update(loss_module.agent, optimizer, mb, eps, cfg)

    traced = compile_or_fallback(functional_minibatch_update, eager, device, log)
    loss_modules = {}

    def update(agent, optimizer, mb, eps, cfg):
        if agent not in loss_modules:
            by_tensor = {p: name for name, p in agent.named_parameters()}
            names = tuple("agent." + by_tensor[p] for p in optimizer_params(optimizer))
            loss_modules[agent] = MinibatchLoss(agent, names)
        for p in optimizer_params(optimizer):
            if not optimizer.state[p]:  # the state Adam keeps, made as Adam(fused=True) makes it
                state = dict(step=torch.zeros((), device=device), exp_avg=torch.zeros_like(p),
                             exp_avg_sq=torch.zeros_like(p))
                if device.type == "cuda":  # fixed addresses, so the CUDA graph updates them in place
                    for tensor in state.values():
                        torch._dynamo.mark_static_address(tensor)
                optimizer.state[p].update(state)
        lrs = [torch.tensor(group["lr"], device=device) for group in optimizer.param_groups]
        return traced(loss_modules[agent], optimizer, lrs, mb, eps, cfg)

    return update


def compile_or_fallback(fn, fallback, device, log):
    """torch.compile(fn) as one graph (on CUDA a replayed CUDA graph). Where compiling fails (no
    C++ compiler, an unsupported Python) the first call says so in one line and fallback, called
    with the same arguments, serves from then on. Random numbers are drawn as eagerly."""
    import torch._inductor.config
    torch._inductor.config.fallback_random = True
    mode = "reduce-overhead" if device.type == "cuda" else None
    compiled = torch.compile(fn, fullgraph=True, mode=mode)
    failed = []

    def call(*args):
        if failed:
            return fallback(*args)
        if device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()
        try:
            return compiled(*args)
        except Exception as e:  # compiling fails on the first call or not at all
            log(f"torch.compile is unavailable here ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0][:120]}); going on without it")
            failed.append(e)
            return fallback(*args)

    return call


# ==== 10. Evaluation: the attacks on a frozen agent, and the robust return ==================

# A run of seed s evaluates on episodes reset(seed=s + EVAL_SEED_OFFSET + i), i = 0..episodes-1:
# never a seed that training used, and the same episodes for every attack.
EVAL_SEED_OFFSET = 10_000
ATTACKER_SEED_OFFSET = {"sarl": 1, "paad": 2, "rs": 3}  # a learned attack trains with seed s + offset
RENAMED = {"optimal": "sarl"}  # SA-RL was called "optimal" (the DESIGN's name) in older records


def make_attack(name, agent, eps, pgd_steps=10):
    """The attacks that need no training, as functions o -> o_hat: none, random, critic (PGD
    lowering the agent's own value estimate V(o_hat)) and mad (PGD maximizing KL(pi(.|o) ||
    pi(.|o_hat)), the maximal action difference). rs, sarl and paad learn first (`attack_suite`)."""
    if name in ("rs", "sarl", "paad"):
        raise InputError(f"the {name} attack is learned, not made: prepare it with attack_suite")
    if name not in ATTACKS:
        raise InputError(f"unknown attack {name!r}; the attacks are {', '.join(ATTACKS)}")
    if name == "none" or eps == 0:
        return lambda obs: obs
    if name == "random":
        return lambda obs: obs + eps * (2 * torch.rand_like(obs) - 1)
    if name == "critic":
        return lambda obs: pgd_attack(obs, agent.value, eps, pgd_steps)

    def mad(obs):
        kl = kl_adversary(agent, obs)
        return pgd_attack(obs, lambda o_hat: -kl(o_hat), eps, pgd_steps)
    return mad


@one_thread
def evaluate(agent, obs_norm, env_id, attack=None, episodes=50, seed=0):
    """Returns of `episodes` episodes with the deterministic action mu(attack(o)), the normalizer
    frozen. Episode i starts from reset(seed=seed + EVAL_SEED_OFFSET + i), so every attack faces
    the same episodes, and seed = the run's seed gives the command line's numbers; torch is seeded
    too, so that random noise and PGD's random starts repeat."""
    with contextlib.closing(make_envs(env_id, episodes)) as envs:
        return run_episodes(agent, obs_norm, envs, attack, seed)


def run_episodes(agent, obs_norm, envs, attack=None, seed=0, on_step=None):
    """One episode per env of `envs` (what `evaluate` measures); on_step(envs) before each step."""
    check_sizes(agent, envs, envs.spec.id)
    attack = attack or (lambda obs: obs)
    torch.manual_seed(seed + EVAL_SEED_OFFSET)
    raw, _ = envs.reset(seed=seed + EVAL_SEED_OFFSET)
    returns, alive = np.zeros(envs.num_envs), np.ones(envs.num_envs, dtype=bool)
    while alive.any():
        if on_step:
            on_step(envs)
        with torch.no_grad():
            action = agent.mu(attack(to_tensor(obs_norm(raw), next(agent.parameters()).device)))
        raw, reward, term, trunc, _ = envs.step(action.cpu().numpy())
        returns += reward * alive
        alive &= ~(term | trunc)
    return returns


def check_sizes(agent, envs, env_id):
    sizes = (agent.mu[0].in_features, agent.log_std.numel())
    task = (envs.single_observation_space.shape[0], envs.single_action_space.shape[0])
    if sizes != task:
        raise InputError(f"the agent has observation/action size {sizes[0]}/{sizes[1]} but "
                         f"{env_id} has {task[0]}/{task[1]}: it was trained on another task")


# --- robust sarsa: PGD on a learned Q of the agent --------------------------------------------

# Victim steps of data (collected once), SARSA epochs per Q model, and each Q model's (action_radius,
# smoothness). SA-PPO / ATLA sweep {0.02, 0.05, 0.1, 0.15, 0.2, 0.3} x {0.1, 0.3, 1, 3, 10} and keep
# the lowest return (one setting can leave Q too rough or too flat to guide PGD); these six take
# every radius once and every weight at least once, at a fifth of the cost.
ROBUST_SARSA = {"data_steps": 100_000, "epochs": 20,
                "models": [(0.02, 0.3), (0.05, 10.0), (0.1, 1.0), (0.15, 0.1), (0.2, 3.0), (0.3, 10.0)]}


def victim_transitions(victim, obs_norm, env_id, steps, seed=0):
    """The fixed victim's own rollouts, as tensors (o, a, r, terminated, o', a'): actions
    a ~ pi(.|o), so that Q sees actions around mu(o); where an episode ended, o' is its last
    observation."""
    device = next(victim.parameters()).device
    torch.manual_seed(seed)
    data = {k: [] for k in ("obs", "action", "reward", "terminated", "next_obs", "next_action")}
    with contextlib.closing(make_envs(env_id, 8)) as envs, torch.no_grad():
        check_sizes(victim, envs, env_id)
        raw, _ = envs.reset(seed=seed)
        for _ in range(steps // envs.num_envs):
            obs = to_tensor(obs_norm(raw), device)
            action = victim.policy(obs).sample()
            raw, reward, term, trunc, info = envs.step(action.cpu().numpy())
            next_raw = raw.copy()
            for i in np.flatnonzero(term | trunc):
                next_raw[i] = info["final_obs"][i]
            next_obs = to_tensor(obs_norm(next_raw), device)
            for key, value in zip(data, (obs, action, to_tensor(reward, device), to_tensor(term, device),
                                         next_obs, victim.policy(next_obs).sample())):
                data[key].append(value)
    return {k: torch.cat(v) for k, v in data.items()}


@one_thread
def train_robust_sarsa(data, action_radius, smoothness, epochs, seed=0, log=print):
    """Robust sarsa (Zhang et al. 2020): learn Q(o, a) of the *fixed* victim from its
    transitions (`victim_transitions`), to attack with. Returns q(o, a) -> value.

    SARSA: Q(o, a) regresses on r / sigma_r + gamma (1 - terminated) Q'(o', a'), with Q' a copy of
    Q renewed every 100 minibatches. Robustness: the attack will ask Q about actions the victim
    takes at perturbed observations, so Q must be smooth around the actions it saw; the penalty
    smoothness * max over |a~ - a|_inf <= action_radius of (Q(o, a~) - Q(o, a))^2, its max found
    by PGD, removes the kinks an attack could exploit.
    """
    torch.manual_seed(seed)
    reward = data["reward"] / (data["reward"].std() + 1e-8)
    q_net = mlp(data["obs"].shape[1] + data["action"].shape[1], 1, out_gain=1.0).to(reward.device)
    q = lambda o, a: q_net(torch.cat([o, a], -1)).squeeze(-1)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=1e-3)
    for epoch in range(epochs):
        total = 0.0
        for i, idx in enumerate(torch.randperm(len(reward), device=reward.device).split(256)):
            if i % 100 == 0:
                frozen = copy.deepcopy(q_net)
            o, a = data["obs"][idx], data["action"][idx]
            with torch.no_grad():
                target = reward[idx] + 0.99 * (1 - data["terminated"][idx]) * frozen(
                    torch.cat([data["next_obs"][idx], data["next_action"][idx]], -1)).squeeze(-1)
                q_a = q(o, a)
            a_far = pgd_attack(a, lambda a_tilde: -(q(o, a_tilde) - q_a) ** 2, action_radius, 3)
            loss = ((q(o, a) - target) ** 2).mean() + smoothness * ((q(o, a_far) - q(o, a)) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx) / len(reward)
        log(f"  [rs {action_radius}/{smoothness}] epoch {epoch + 1}/{epochs}: loss {total:.4f}")
    q_net.requires_grad_(False)
    return q


def rs_attack(victim, q, obs, eps, pgd_steps):
    """Robust sarsa's attack: PGD lowering Q(o, mu(o_hat)), the victim's action at o_hat judged
    by Q at the true o."""
    return pgd_attack(obs, lambda o_hat: q(obs, victim.mu(o_hat)), eps, pgd_steps)


# --- learned attackers: SA-RL and PA-AD, trained by PPO --------------------------------------

class VictimUnderAttack(gym.vector.VectorWrapper):
    """The environment of a learned attacker, with a frozen victim inside. The attacker observes
    the victim's normalized observation o and acts u in [-1, 1]^dim; perturb(o, u) turns u into the
    o_hat the victim sees; the victim acts mu(o_hat), and the attacker receives minus the victim's
    reward. Training the attacker with the same PPO (`train`) gives the most damaging policy it
    can learn."""

    def __init__(self, envs, victim, obs_norm, perturb, action_dim):
        super().__init__(envs)
        dim = envs.single_observation_space.shape[0]
        self.single_observation_space = gym.spaces.Box(-10.0, 10.0, (dim,), np.float64)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.victim, self.obs_norm, self.perturb = victim, obs_norm, perturb
        self.device = next(victim.parameters()).device

    def reset(self, **kwargs):
        raw, info = self.env.reset(**kwargs)
        self.o = self.obs_norm(raw)
        return self.o, info

    @torch.no_grad()
    def step(self, u):
        u = to_tensor(np.clip(u, -1.0, 1.0), self.device)
        action = self.victim.mu(self.perturb(to_tensor(self.o, self.device), u)).cpu().numpy()
        raw, reward, term, trunc, info = self.env.step(action)
        self.o = self.obs_norm(raw)
        if "final_obs" in info:  # the attacker's final observations are normalized ones too
            info["final_obs"] = info["final_obs"].copy()
            for i in np.flatnonzero(info["_final_obs"]):
                info["final_obs"][i] = self.obs_norm(info["final_obs"][i])
        return self.o, -reward, term, trunc, info


def sarl_perturbation(eps):
    """SA-RL (Zhang et al. 2021): the attacker's action is the perturbation, o_hat = o + eps u."""
    return lambda obs, u: obs + eps * u


def paad_perturbation(victim, eps, pgd_steps):
    """PA-AD (Sun et al. 2022): the director's action d is a direction in the victim's action
    space; the actor finds the o_hat in B_eps(o) that pushes the victim's mean action along d and
    far, maximizing cos(mu(o_hat) - mu(o), d) + |mu(o_hat) - mu(o)|_2 (PA-AD's MuJoCo objective; the
    cosine alone is met by a tiny move along d). PA-AD takes one signed step; the same PGD as
    every other attack reaches a higher value. The director learns in the action's dimension
    instead of the observation's (SA-RL), an easier problem on tasks like Ant."""
    def perturb(obs, d):
        with torch.no_grad():
            mu_clean = victim.mu(obs)

        def along_d_and_far(o_hat):
            diff = victim.mu(o_hat) - mu_clean
            return F.cosine_similarity(diff, d, dim=-1) + torch.linalg.vector_norm(diff, dim=-1)

        return pgd_attack(obs, lambda o_hat: -along_d_and_far(o_hat), eps, pgd_steps)
    return perturb


def plateaued(min_steps, window=100_000):
    """A learned attacker's stop rule: after min_steps, stop once its mean episode return over
    the last `window` steps is no more than 2% (of its size) above the window before."""
    def stop(rows):
        n = max(1, window // (rows[-1]["env_steps"] // rows[-1]["iteration"]))
        if rows[-1]["env_steps"] < min_steps or len(rows) < 2 * n:
            return False
        last = np.mean([r["episode_return"] for r in rows[-n:]])
        before = np.mean([r["episode_return"] for r in rows[-2 * n:-n]])
        return last - before <= 0.02 * abs(before) + 1.0
    return stop


@one_thread
def train_learned_attack(target, kind, curve_path=None):
    """Train an SA-RL (kind "sarl") or PA-AD (kind "paad") attacker on target.agent with PPO
    (SPO): at least target.attacker_steps steps, then until its return plateaus, at most twice as
    long. Its learning curve goes to curve_path. Returns the attack o -> o_hat and what it did."""
    victim, steps, device = target.agent, target.attacker_steps, next(target.agent.parameters()).device
    obs_dim, act_dim = victim.mu[0].in_features, victim.log_std.numel()
    # The attackers' PPO is the same for every victim (8 envs, gradients clipped to 0.5), so that
    # every agent, of either formulation, faces the same attacks.
    cfg = Config(env=target.env_id, algo="spo", total_steps=2 * max(steps, 2048), num_envs=8,
                 max_grad_norm=0.5, seed=target.seed + ATTACKER_SEED_OFFSET[kind])
    if kind == "sarl":
        perturb, action_dim = sarl_perturbation(target.eps), obs_dim
    else:
        perturb, action_dim = paad_perturbation(victim, target.eps, target.pgd_steps), act_dim
        if wants_compile(cfg):  # the actor's PGD runs at every step of the attacker's training
            perturb = compile_or_fallback(perturb, perturb, device, target.log)
    envs = VictimUnderAttack(make_envs(target.env_id, cfg.num_envs), victim, target.obs_norm,
                             perturb, action_dim)
    torch.manual_seed(cfg.seed)
    attacker, attacker_norm = Agent(obs_dim, action_dim).to(device), ObsNormalizer(obs_dim)
    victim.requires_grad_(False)
    try:
        with contextlib.closing(envs):
            check_sizes(victim, envs.env, target.env_id)
            rows = train(cfg, envs, attacker, attacker_norm, stop=plateaued(steps),
                         log=lambda s: target.log(f"  [{kind} attack] " + s))
    finally:
        victim.requires_grad_(True)
    if curve_path:
        with open_metrics(Path(curve_path), keep_rows=0) as f:
            csv.DictWriter(f, METRICS).writerows(rows)

    def attack(obs):
        u = attacker.mu(to_tensor(attacker_norm(obs.cpu().numpy()), obs.device))
        return perturb(obs, u.clamp(-1.0, 1.0))

    return attack, {"attacker_steps": rows[-1]["env_steps"],
                    "final_attacker_return": rows[-1]["episode_return"], "seed": cfg.seed}


# --- the suite: every attack prepared the same way -----------------------------------------

@dataclasses.dataclass
class Target:
    """An agent to attack, and the settings the attacks read."""
    agent: Agent
    obs_norm: ObsNormalizer
    env_id: str
    eps: float
    seed: int = 0                      # the run's: it sets the episodes and the attackers' seeds
    pgd_steps: int = 10
    attacker_steps: int = 1_000_000    # the learned attackers' PPO steps, at least
    curve_prefix: str = None           # their curves go to <prefix>-sarl.csv, <prefix>-paad.csv
    log: Callable = print


def prepare_made(target, name):
    attack = make_attack(name, target.agent, target.eps, target.pgd_steps)
    return {"pgd_steps": target.pgd_steps} if name in ("critic", "mad") else {}, [(attack, {})]


def prepare_robust_sarsa(target, name):
    """One collection of the victim's transitions, then a Q model and its attack per setting."""
    seed = target.seed + ATTACKER_SEED_OFFSET["rs"]
    target.log(f"learning {len(ROBUST_SARSA['models'])} Q models of the agent for robust sarsa")
    agent, steps = target.agent, ROBUST_SARSA["data_steps"]
    data = victim_transitions(agent, target.obs_norm, target.env_id, steps, seed)
    attacks = []
    for radius, smoothness in ROBUST_SARSA["models"]:
        q = train_robust_sarsa(data, radius, smoothness, ROBUST_SARSA["epochs"], seed, target.log)
        attack = functools.partial(rs_attack, agent, q, eps=target.eps, pgd_steps=target.pgd_steps)
        attacks.append((attack, {"action_radius": radius, "smoothness": smoothness}))
    return {"pgd_steps": target.pgd_steps, "data_steps": ROBUST_SARSA["data_steps"],
            "epochs": ROBUST_SARSA["epochs"], "seed": seed}, attacks


def prepare_learned(target, name):
    target.log(f"training the {name} attacker for at least {target.attacker_steps:,} steps")
    curve = f"{target.curve_prefix}-{name}.csv" if target.curve_prefix else None
    attack, settings = train_learned_attack(target, name, curve)
    settings.update(min_attacker_steps=target.attacker_steps, curve=curve and Path(curve).name)
    if name == "paad":
        settings.update(pgd_steps=target.pgd_steps, actor_objective="cos+norm")
    return settings, [(attack, {})]


# The evaluation attacks, in the order they run: name -> (description, prepare). prepare(target,
# name) returns the attack's settings and one attack, or several of which the lowest return
# counts (robust sarsa's Q models), each with its own settings.
ATTACKS = {
    "none": ("no attack: the natural return", prepare_made),
    "random": ("uniform noise in the ball", prepare_made),
    "critic": ("PGD lowering the agent's own value estimate V(o_hat)", prepare_made),
    "mad": ("PGD maximizing KL(pi(.|o) || pi(.|o_hat)): the maximal action difference", prepare_made),
    "rs": ("robust sarsa: PGD lowering a learned Q(o, mu(o_hat)) of the agent, the lowest of "
           f"{len(ROBUST_SARSA['models'])} Q models", prepare_robust_sarsa),
    "sarl": ("SA-RL: an attacker policy trained by PPO on minus the agent's reward", prepare_learned),
    "paad": ("PA-AD: a learned director picks a direction of the agent's action, PGD realizes it",
             prepare_learned),
}


@one_thread
def attack_suite(target, attacks=tuple(ATTACKS), episodes=50, table=None, on_result=None):
    """Evaluate target under each attack in turn. Returns {attack: {mean, std, seconds,
    settings}} and the worst attack's name. table: results measured already (an evaluation cut
    short), kept as they are; on_result(table) is called after every attack."""
    table = dict(table or {})
    for name in (a for a in attacks if a not in table):
        began, first = time.perf_counter(), target.seed + EVAL_SEED_OFFSET
        settings = {"eps": target.eps, "episode_seeds": [first, first + episodes - 1]}
        _, prepare = ATTACKS[name]
        # at eps 0 the ball is the point o: every attack is the identity
        own, candidates = prepare(target, name) if target.eps > 0 else ({}, [(None, {})])
        run = functools.partial(evaluate, target.agent, target.obs_norm, target.env_id,
                                episodes=episodes, seed=target.seed)
        tried = [(run(attack), model) for attack, model in candidates]
        returns = min(tried, key=lambda t: t[0].mean())[0]
        settings.update(own)
        if len(tried) > 1:
            settings["models"] = [{**m, "mean": float(r.mean()), "std": float(r.std())}
                                  for r, m in tried]
        seconds = round(time.perf_counter() - began, 1)
        table[name] = {"mean": float(returns.mean()), "std": float(returns.std()),
                       "seconds": seconds, "settings": settings}
        if on_result:  # kept first: a Ctrl-C after the line below loses nothing
            on_result(table)
        target.log(f"  {name:8s} {returns.mean():9.1f} +- {returns.std():7.1f}   ({seconds:.1f} s)")
    return table, worst_attack(table)


def worst_attack(table):
    """The attack with the lowest mean return, none excepted (its return is the robust return);
    None while no other attack has been measured."""
    attacked = [a for a in table if a != "none"]
    return min(attacked, key=lambda a: table[a]["mean"]) if attacked else None


# ==== 11. The command line ==================================================================

class UsageError(Exception):
    """Bad command-line input: the message is printed as one line, and the exit status is 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (status 130) or SIGTERM (143), with one line saying what was kept."""

    def __init__(self, message, status=130):
        super().__init__(message)
        self.status = status


def terminated(signum, frame):
    raise Interrupted("terminated", status=143)


def interrupt_status(e):
    """130 or 143 for a Ctrl-C or SIGTERM, also one that arrived inside a lazy import of torch's
    (which wraps it in a RuntimeError); any other error is raised again."""
    signal_error = e if isinstance(e, KeyboardInterrupt) else e.__cause__
    if not isinstance(signal_error, KeyboardInterrupt):
        raise e
    return getattr(signal_error, "status", 130)


def integer(text):
    """A whole number, also written 1e6 or 2_000_000 (argparse names the type in its errors)."""
    value = float(text.replace("_", ""))
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


# flag -> (default, type or choices, help). A training flag's default is its Config field's, or
# None where the task and the method decide it (`task_config`).
PER_TASK = "default per task and method, the published configs' (TASK_SETTINGS)"
FLAGS = {
    "env": (None, str, "gymnasium task id (default Hopper-v4; with --eval, the checkpoint's task)"),
    "algo": (Config.algo, ["spo", "arpo", "barpo"], "the lower level: spo none (PPO); arpo the "
             "strongest adversary (PGD on the surrogate); barpo (default) SGLD on the KL"),
    "kappa": (None, float, f"weight of SPO guidance in ARPO's and BARPO's upper level (default "
              f"{Config.kappa:g}, chosen by results/kappa; the ablation's guided variants use 1)"),
    "total_steps": (None, integer, "training steps, in whole iterations of 2048, e.g. 1e6 (default "
                    "the published budget: 1,998,848; Ant 9,998,336)"),
    "seed": (Config.seed, integer, f"seed of torch and the environments; evaluation episodes use "
             f"seed + {EVAL_SEED_OFFSET:,} on (default %(default)s)"),
    "eps": (None, float, "radius of the L-infinity ball on the normalized observation (default "
            + ", ".join(f"{k} {v}" for k, v in TASK_EPS.items()) + "; with --eval the checkpoint's)"),
    "lr_policy": (None, float, f"Adam's learning rate of the policy, annealed to 0; {PER_TASK}"),
    "lr_value": (None, float, f"Adam's learning rate of the critic, annealed to 0; {PER_TASK}"),
    "value_clip": (None, ["on", "off"], f"PPO's value clipping; {PER_TASK}"),
    "init_std": (None, float, f"initial std of the Gaussian policy; {PER_TASK}"),
    "entropy_coef": (None, float, f"weight of the policy's entropy in the objective; {PER_TASK}"),
    "max_grad_norm": (Config.max_grad_norm, float, "clip the gradient's norm (default inf: none)"),
    "eps_ramp": (Config.eps_ramp, float, "fraction of training eps ramps up over (default %(default)s)"),
    "pgd_steps": (Config.pgd_steps, integer, "steps of the lower level (PGD, SGLD) and of the PGD "
                  "attacks (default %(default)s)"),
    "num_envs": (Config.num_envs, integer, "environments collecting each iteration's 2048 steps "
                 "(default %(default)s, results/actors)"),
    "vector_env": (Config.vector_env, ["sync", "async"], "step the environments one after the other "
                   "(sync, default) or each in its own process (async: only with cores to spare)"),
    "device": (Config.device, ["auto", "cpu", "cuda"], "where the networks live; auto (default) is "
               "the CPU, faster than a GPU for networks this small (README, Speed)"),
    "compile": (Config.compile, ["auto", "on", "off"], f"the minibatch update through torch.compile "
                f"(auto: runs of {COMPILE_MIN_STEPS:,} steps or more); off is the eager reference"),
    "checkpoint_every": (Config.checkpoint_every, integer, "iterations between resumable "
                         "checkpoints (default %(default)s; Ctrl-C and SIGTERM also write one)"),
    "out": (None, str, "the run folder (default runs/<env>-<algo>-seed<seed>); with --eval, the "
            "record's (default the checkpoint's, for an agent under results/ the same path in runs/)"),
    "episodes": (None, integer, "evaluation episodes per attack (default 50; with --resume, the run's)"),
    "attacks": (None, str, "comma-separated evaluation attacks (default all: " + ",".join(ATTACKS)
                + "; with --resume, the run's)"),
    "attacker_steps": (None, integer, "PPO steps at least for each learned attacker, then on until "
                       "its return plateaus, at most twice as long (default 1,000,000)"),
    "eval": (None, str, "only evaluate this checkpoint.pt into eval-<attacks>-eps<eps>-<n>ep.json, "
             "never replacing a finished record (one cut short is completed)"),
    "resume": (None, str, "continue the interrupted run in this folder (or of this checkpoint.pt) "
               "as it started, then evaluate it"),
}
TRAINING = ("algo", "kappa", "total_steps", "seed", "lr_policy", "lr_value", "value_clip",
            "init_std", "entropy_coef", "max_grad_norm", "eps_ramp", "pgd_steps", "num_envs",
            "vector_env", "compile", "checkpoint_every")
EVALUATION = {"attacks": ",".join(ATTACKS), "episodes": 50, "attacker_steps": 1_000_000}
MOST_STEPS = 1_000_000_000
# The numbers a flag can take: (usable, what to say otherwise).
CHECKS = {
    "kappa": (lambda v: 0 <= v < math.inf, "must be a finite weight >= 0"),
    "total_steps": (lambda v: 2048 <= v <= MOST_STEPS, f"must be in [2048, {MOST_STEPS:,}]"),
    "seed": (lambda v: 0 <= v < 2 ** 32, "must be a whole number in [0, 2^32)"),
    "lr_policy": (lambda v: 0 < v < 1, "must be a learning rate in (0, 1), e.g. 3e-4"),
    "lr_value": (lambda v: 0 < v < 1, "must be a learning rate in (0, 1), e.g. 2.5e-4"),
    "init_std": (lambda v: 0 < v < math.inf, "must be a positive std, e.g. 1.0"),
    "entropy_coef": (lambda v: 0 <= v < math.inf, "must be a finite weight >= 0"),
    "max_grad_norm": (lambda v: v > 0, "must be a norm > 0 (inf: no clipping)"),
    "eps_ramp": (lambda v: 0 < v <= 1, "must be a fraction in (0, 1]"),
    "pgd_steps": (lambda v: 1 <= v <= 1000, "must be in [1, 1000]"),
    "num_envs": (lambda v: v >= 1 and 2048 % v == 0, "must divide 2048 (e.g. 1, 4, 8, 16)"),
    "checkpoint_every": (lambda v: v >= 1, "must be at least 1"),
    "eps": (lambda v: 0 <= v < math.inf, "must be a finite number >= 0"),
    "episodes": (lambda v: 1 <= v <= 10_000, "must be in [1, 10,000]"),
    "attacker_steps": (lambda v: 2048 <= v <= MOST_STEPS, f"must be in [2048, {MOST_STEPS:,}]"),
}


class Parser(argparse.ArgumentParser):
    """argparse, whose errors become one line (a UsageError) instead of the usage block."""

    def error(self, message):
        message = message.replace("integer value", "whole number").replace("float value", "number")
        raise UsageError(f"{message}; python barpo.py --help lists every flag and its values")


def parse_args(argv):
    p = Parser(
        prog="barpo.py", description="Train SPO, ARPO or BARPO on a gymnasium task with continuous "
        "observations and actions, then evaluate it under observation attacks. With --resume, "
        "continue an interrupted run; with --eval, only evaluate a saved agent.",
        epilog="attacks: " + "; ".join(f"{k}: {v[0]}" for k, v in ATTACKS.items()) +
               ". The robust return is the lowest return over the attacks run.")
    metavars = {"eval": "CHECKPOINT", "resume": "RUN_DIR", "out": "DIR", "eps_ramp": "FRACTION",
                "attacks": "LIST", "total_steps": "STEPS", "attacker_steps": "STEPS", "kappa": "K",
                "lr_policy": "LR", "lr_value": "LR", "init_std": "STD", "entropy_coef": "WEIGHT",
                "max_grad_norm": "NORM", "pgd_steps": "K", "env": "TASK", "eps": "EPS"}
    for name, (default, kind, text) in FLAGS.items():
        typed = ({"choices": kind} if isinstance(kind, list) else
                 {"type": kind, "metavar": metavars.get(name, "N")})
        p.add_argument("--" + name.replace("_", "-"), default=default, help=text, **typed)
    args = p.parse_args(argv)
    args.given = {name for name in TRAINING if getattr(args, name) != FLAGS[name][0]}
    for name, (usable, problem) in CHECKS.items():
        if getattr(args, name) is not None and not usable(getattr(args, name)):
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} {problem}")
    return args


def config_from_args(args):
    """Turn command-line arguments into a Config, rejecting bad input with a UsageError."""
    env_id = args.env or Config.env
    try:  # before anything else: nothing else matters for a task we cannot run
        make_envs(env_id, 1).close()
    except InputError as e:
        raise UsageError(f"{e}; choose a task with continuous observations and actions, "
                         f"e.g. --env Hopper-v4")
    if args.kappa is not None and args.algo == "spo":
        raise UsageError("--kappa weights the SPO guidance of ARPO and BARPO, and SPO has no "
                         "adversary to guide against; drop it, or use --algo arpo or barpo")
    eps = TASK_EPS.get(env_id.split("-")[0]) if args.eps is None else args.eps
    if eps is None:
        raise UsageError(f"{env_id} has no default attack radius; give one with --eps (e.g. --eps 0.1)")
    given = {name: getattr(args, name) for name in TRAINING
             if name != "algo" and getattr(args, name) is not None}
    if "value_clip" in given:
        given["value_clip"] = given["value_clip"] == "on"
    return task_config(env_id, args.algo, eps=eps, device=args.device,
                       evaluation=evaluation_settings(args), **given)


def evaluation_settings(args, saved=None):
    """--attacks, --episodes and --attacker-steps: as given, else as the run started, else the
    defaults."""
    settings = {**EVALUATION, **(saved or {})}
    settings.update({k: getattr(args, k) for k in settings if getattr(args, k) is not None})
    settings["attacks"] = ",".join(parse_attacks(settings["attacks"]))
    return settings


def parse_attacks(text):
    names = [RENAMED.get(a.strip(), a.strip()) for a in text.split(",") if a.strip()]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown or not names:
        raise UsageError(f"unknown attack(s) {unknown or text!r} in --attacks; choose from "
                         f"{','.join(ATTACKS)}")
    twice = sorted({a for a in names if names.count(a) > 1})
    if twice:
        raise UsageError(f"--attacks names {', '.join(twice)} more than once; name each attack once")
    return names


def pick_device(name):
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device("cpu" if name == "auto" else name)


def checkpoint_for(flag, path, env_id=None, device="cpu"):
    """load_checkpoint, its errors said as the command line's: one line naming the flag."""
    try:
        return load_checkpoint(path, env_id, device)
    except InputError as e:
        raise UsageError(f"{e}; give {flag} the checkpoint.pt of a barpo.py run"
                         + (f" of {env_id}, or drop --env" if env_id else ""))


def writable_folder(path, flag):
    """path made (with its parents) if it is not there; a UsageError if it cannot be written."""
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a folder; give a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".barpo-write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UsageError(f"{flag} {path}: cannot write there ({e.strerror}); give a folder you can write")


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    torch.set_num_threads(1)
    if args.eval and args.resume:
        raise UsageError("give --eval (evaluate a checkpoint) or --resume (continue a run), not both")
    if args.eval and args.given:
        flags = ", ".join("--" + f.replace("_", "-") for f in sorted(args.given))
        raise UsageError(f"{flags} set training, but --eval evaluates an agent as it was trained; "
                         f"drop them")
    fixed = sorted(args.given | {n for n in ("env", "eps", "out") if getattr(args, n) is not None})
    if args.resume and fixed:
        raise UsageError(f"{', '.join('--' + f.replace('_', '-') for f in fixed)} cannot change a "
                         f"run that --resume continues as it started; drop them (to evaluate it "
                         f"otherwise, use --eval)")
    if args.eval:
        return evaluate_command(args)
    if args.resume:
        return resume_command(args)
    return train_command(args)


def train_command(args):
    cfg = config_from_args(args)
    device = pick_device(args.device)
    run_dir = Path(args.out or f"runs/{cfg.env}-{cfg.algo}-seed{cfg.seed}")
    if any((run_dir / name).exists() for name in ("checkpoint.pt", "eval.json")):
        raise UsageError(f"{run_dir} already holds a run; continue it with --resume {run_dir}, "
                         f"or give another --out")
    torch.manual_seed(cfg.seed)
    made = not run_dir.exists()
    writable_folder(run_dir, "--out")
    envs = make_envs(cfg.env, cfg.num_envs, cfg.vector_env)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent, obs_norm = Agent(obs_dim, act_dim, cfg.init_std).to(device), ObsNormalizer(obs_dim)
    try:
        return run_training(cfg, envs, agent, obs_norm, run_dir)
    finally:  # a run that kept nothing leaves no folder behind
        if made and not (run_dir / "checkpoint.pt").exists():
            (run_dir / "metrics.csv").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                run_dir.rmdir()


def resume_command(args):
    given = Path(args.resume)
    run_dir = given.parent if given.is_file() else given
    device = pick_device(args.device)
    agent, obs_norm, state = checkpoint_for("--resume", run_dir / "checkpoint.pt", device=device)
    if state["format"] != CHECKPOINT_FORMAT:
        raise UsageError(f"{run_dir / 'checkpoint.pt'} was written by an older barpo.py (the "
                         f"earlier formulation of BARPO), whose training this one cannot go on "
                         f"with; evaluate it with --eval instead")
    record, done = run_dir / "eval.json", state["training"]["iteration"]
    evaluated = record.exists() and not read_record(record)["partial"]
    asked = [f"--{k.replace('_', '-')}" for k in EVALUATION if getattr(args, k) is not None]
    if evaluated and asked:
        raise UsageError(f"{run_dir} is trained and evaluated, so {', '.join(asked)} cannot apply; "
                         f"evaluate it again with python barpo.py --eval {run_dir / 'checkpoint.pt'} "
                         f"{' '.join(asked)} ...")
    metrics = run_dir / "metrics.csv"
    rows = len(metrics.read_text().splitlines()) - 1 if metrics.exists() else -1
    if rows < done:
        what = "is missing" if rows < 0 else f"holds {rows:,} iterations"
        raise UsageError(f"{metrics} {what}, but the checkpoint is at iteration {done:,}: the run's "
                         f"history is lost; restore the file, or train again with another --out")
    cfg = Config(**state["config"])
    cfg.evaluation = evaluation_settings(args, cfg.evaluation)
    envs = make_envs(cfg.env, cfg.num_envs, cfg.vector_env)
    return run_training(cfg, envs, agent, obs_norm, run_dir, resume=state["training"])


class StopAtIterationEnd:
    """While training, Ctrl-C and SIGTERM (what `kill` and cluster schedulers send) ask it to
    stop when the iteration in progress ends, which is then checkpointed; a second one stops it
    at once, losing the iterations since the last checkpoint."""

    def __enter__(self):
        self.received, signals = None, (signal.SIGINT, signal.SIGTERM)
        if threading.current_thread() is not threading.main_thread():  # handlers live there
            signals = ()
        self.previous = {s: signal.signal(s, self.ask) for s in signals}
        return self

    def ask(self, signum, frame):
        self.received = signum
        signal.signal(signum, self.previous[signum])
        print("stopping when this iteration ends (once more to stop at once)", flush=True)

    def __exit__(self, *exc):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def plural(n, word):
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def run_training(cfg, envs, agent, obs_norm, run_dir, resume=None):
    """Train (or go on training) into run_dir, then evaluate into run_dir/eval.json."""
    trained, finished = cfg.iterations * cfg.steps_per_iteration, resume["iteration"] if resume else 0
    print(f"{cfg.algo.upper()} (kappa {cfg.kappa:g}) on {cfg.env}: {trained:,} steps "
          f"({plural(cfg.iterations, 'iteration')} of {cfg.steps_per_iteration}), eps {cfg.eps}, "
          f"device {next(agent.parameters()).device}, compile {'on' if wants_compile(cfg) else 'off'}, "
          f"run folder {run_dir}" + (f"; resuming after iteration {finished:,}" if resume else ""))
    go_on = f"continue with: python barpo.py --resume {run_dir}"
    stopping = StopAtIterationEnd()
    try:
        with stopping, contextlib.closing(envs):
            if finished < cfg.iterations:
                rows = train(cfg, envs, agent, obs_norm, run_dir=run_dir, resume=resume,
                             stop=lambda rows: stopping.received is not None)
    except (KeyboardInterrupt, RuntimeError) as e:  # a second signal: stopped at once
        stopping.received = signal.SIGTERM if interrupt_status(e) == 143 else signal.SIGINT
    if stopping.received is not None:
        status = 143 if stopping.received == signal.SIGTERM else 130
        checkpoint = run_dir / "checkpoint.pt"
        if not checkpoint.exists():
            raise Interrupted("interrupted before the first checkpoint; nothing to keep", status)
        saved = load_checkpoint(checkpoint)[2]["training"]["iteration"]
        raise Interrupted(f"interrupted: {checkpoint} holds iteration {saved:,} of "
                          f"{cfg.iterations:,}; {go_on}", status)
    if finished < cfg.iterations:
        print(f"trained {trained:,} steps in {rows[-1]['wall_time_s']:.0f} s; evaluating")
    record = run_dir / "eval.json"
    if record.exists() and not read_record(record)["partial"]:
        print(f"{run_dir} is trained and evaluated ({record}); nothing left to do")
        return read_record(record)
    return run_evaluation(agent, obs_norm, record_header(dataclasses.asdict(cfg), trained, cfg.eps),
                          cfg.evaluation, record, go_on)


def evaluate_command(args):
    agent, obs_norm, state = checkpoint_for("--eval", args.eval, args.env, pick_device(args.device))
    eps = state["config"]["eps"] if args.eps is None else args.eps
    evaluation = evaluation_settings(args)
    folder, shipped = Path(args.eval).resolve().parent, Path(__file__).resolve().parent / "results"
    out_dir = Path(args.out or (Path("runs") / folder.relative_to(shipped)
                                if folder.is_relative_to(shipped) else folder))
    writable_folder(out_dir, "--out")
    record = out_dir / eval_record_name(parse_attacks(evaluation["attacks"]), eps, evaluation["episodes"])
    if record.exists() and not read_record(record)["partial"]:
        raise UsageError(f"{record} already holds this evaluation; to make it again, give another "
                         f"--out folder (it is never replaced)")
    return run_evaluation(agent, obs_norm, record_header(state["config"], state["env_steps"], eps),
                          evaluation, record, "the same command goes on")


LOWER_LEVEL = {"spo": "none", "arpo": "PGD minimizing the surrogate", "barpo": "SGLD maximizing the KL"}
PLUMBING = ("vector_env", "device", "compile", "checkpoint_every", "evaluation")


def record_header(config, total_steps, eps):
    """What an evaluation record says of the agent it evaluated: its lower level and every
    setting it was trained with (an agent of the earlier formulation says so instead)."""
    return {**{k: config[k] for k in ("env", "algo", "seed", "pgd_steps")},
            "total_steps": total_steps, "eps": eps,
            "lower_level": config.get("formulation", LOWER_LEVEL[config["algo"]]),
            "trained_with": {k: v for k, v in config.items() if k not in PLUMBING}}


def eval_record_name(attacks, eps, episodes):
    """A re-evaluation's file says what it holds, so it never replaces another record."""
    return f"eval-{'+'.join(attacks)}-eps{eps:g}-{episodes}ep.json"


def read_record(path):
    """An evaluation record, with today's names of the attacks (RENAMED)."""
    record = json.loads(Path(path).read_text())
    record["returns"] = {RENAMED.get(k, k): v for k, v in record["returns"].items()}
    record["worst"] = RENAMED.get(record["worst"], record["worst"])
    record.setdefault("partial", False)
    return record


def run_evaluation(agent, obs_norm, header, evaluation, record, go_on):
    """attack_suite with the command line's settings into `record`: written after every attack
    (marked partial until the last), and continued where one cut short stopped; go_on says how."""
    attacks = parse_attacks(evaluation["attacks"])
    result = {**header, "episodes": evaluation["episodes"], "command": "python " + shlex.join(sys.argv),
              "made": made_on(), "partial": True, "returns": {}, "worst": None}
    if record.exists():
        result["returns"] = read_record(record)["returns"]
        kept = ", ".join(result["returns"]) or "nothing"
        print(f"{record} was cut short: keeping {kept}, measuring the rest")

    def keep(table):
        result.update(returns=table, worst=worst_attack(table), partial=len(table) < len(attacks))
        tmp = Path(str(record) + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, record)

    target = Target(agent, obs_norm, header["env"], header["eps"], header["seed"], header["pgd_steps"],
                    evaluation["attacker_steps"], str(record.with_suffix("")))
    try:
        keep(attack_suite(target, attacks, evaluation["episodes"], result["returns"], keep)[0])
    except (KeyboardInterrupt, RuntimeError) as e:
        finished = ", ".join(result["returns"]) or "none"
        raise Interrupted(f"interrupted: the attacks finished ({finished}) are kept in {record}, "
                          f"marked partial; {go_on}", interrupt_status(e))
    print(f"\n{result['env']}  {result['algo']}  seed {result['seed']}  eps {result['eps']}"
          f"  ({plural(result['episodes'], 'episode')}, deterministic actions)")
    print(f"{'attack':10s} {'mean':>10s} {'std':>9s}")
    for name, r in result["returns"].items():
        mark = "  <- worst attack: the robust return" if name == result["worst"] else ""
        print(f"{name:10s} {r['mean']:10.1f} {r['std']:9.1f}{mark}")
    print(f"\nwrote {record}")
    return result


def made_on():
    import platform
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(),
            "processor": platform.processor() or "unknown", "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gymnasium": gym.__version__, "numpy": np.__version__}


def cli(argv=None):
    """main() as a program: bad input and interruptions in one line each; the exit status."""
    try:
        main(argv)
    except UsageError as e:
        print(f"barpo.py: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"\n{str(e) or 'interrupted'}", file=sys.stderr)
        return getattr(e, "status", 130)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)   # from here on, KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminated)  # outside training: stop as Ctrl-C does, status 143
    sys.exit(cli())
