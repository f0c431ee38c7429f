"""SPO, ARPO and BARPO in one file: an educational reference implementation of

    "On the Tension Between Optimality and Adversarial Robustness in Policy Optimization"
    (Li et al., arXiv 2512.01228, ICLR 2026).

Run it:
    python barpo.py --env Hopper-v4                       # BARPO, ~2M steps, then the attack suite
    python barpo.py --env Hopper-v4 --algo spo            # standard PPO
    python barpo.py --resume runs/Hopper-v4-barpo-seed0   # continue an interrupted run
    python barpo.py --eval runs/<run>/checkpoint.pt       # evaluate a saved agent under attack

Read it top to bottom: the sections follow the order in which the algorithm runs.

Paper notion                                  Name in this file
--------------------------------------------  -----------------------------------------------
ISA-MDP (CAR): adversary cannot change the    docstring of `attack_strength` (why optima are
  optimal action inside the ball              preserved)
observation o (normalized state)              `ObsNormalizer`, the `obs` tensors
adversary nu, perturbed observation o_hat     `pgd_attack(...)` -> `o_hat`
ball B_eps(o) (L-infinity, normalized obs)    `eps`, the clamp in `pgd_attack`
policy pi_theta / value V_phi                 `Agent.policy`, `Agent.value`
surrogate l_t (PPO clipped objective)         `surrogate`
SPO  (standard policy optimization)           `--algo spo`  = bilevel loop with kappa = 0
ARPO (strongest adversary, CAR-PPO style)     `--algo arpo` = bilevel loop with kappa = 1
BARPO (bilevel, modulated strength)           `--algo barpo`, `bilevel_update`
adversary strength kappa                      `attack_strength` (the kappa schedule)
KL surrogate (measured strength)              `gaussian_kl`, `realized_attack_kl`
lower level (inner minimization)              `adversary_objective` + `pgd_attack`
upper level (outer maximization)              `minibatch_loss`, `bilevel_update`
SPO guidance                                  `--spo-guidance`, `Config.spo_guidance`
FOSP (first-order stationary policy)          where the upper-level gradient vanishes; the
                                              notebook's toy shows the sticky ones
robust return (worst case over attacks)       `attack_suite`

What is reconstructed. The paper's text is not available to this project; only its abstract and
public summaries are. The KL-regularized lower level
    o_hat(kappa) = argmin_{B_eps(o)} kappa * l(theta; o_hat) + (1 - kappa) * KL(pi(.|o) || pi(.|o_hat)),
the kappa schedule (a constant 0.02 by default, chosen by measurement; a ramp from 0 to 1 on
request), and the way SPO guidance enters are this project's reading of "modulating adversary
strength" with "a KL surrogate". PPO, the CAR-PPO robust surrogate, the eps ramp and the attacks
follow published settings, with two departures: PGD's step sizes shrink linearly instead of
staying at eps / 10 (`pgd_attack` says why), and a time-limit truncation bootstraps from the
critic instead of counting as the end of the episode (`Rollout.collect`).
"""

import argparse
import copy
import csv
import dataclasses
import functools
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
import torch.nn.functional as F
from gymnasium.vector.utils import batch_space
from torch.optim.adam import adam as functional_adam


# ============================================================================================
# 1. Configuration
# ============================================================================================

# eps of the L-infinity ball on the normalized observation, per task (SA-PPO / CAR-PPO papers).
TASK_EPS = {"Hopper": 0.075, "Walker2d": 0.05, "HalfCheetah": 0.15, "Ant": 0.15}

# The evaluation attacks (section 8), in the order they run.
ATTACKS = {
    "none": "no attack: the natural return",
    "random": "uniform noise in the ball",
    "critic": "PGD lowering the agent's own value estimate V(o_hat)",
    "mad": "PGD maximizing KL(pi(.|o) || pi(.|o_hat)): the maximal action difference",
    "rs": "robust sarsa: PGD lowering a separately learned Q(o, mu(o_hat)) of the agent",
    "optimal": "SA-RL: an attacker policy trained by PPO on minus the agent's reward",
    "paad": "PA-AD: a learned director picks a direction of the agent's action, PGD realizes it",
}

# A run of seed s evaluates on episodes reset(seed=s + EVAL_SEED_OFFSET + i), i = 0..episodes-1:
# never a seed that training used, and the same episodes for every attack.
EVAL_SEED_OFFSET = 10_000
# The learned attacks of a run of seed s train with seed s + offset.
ATTACKER_SEED_OFFSET = {"optimal": 1, "paad": 2, "rs": 3}


@dataclasses.dataclass
class Config:
    env: str = "Hopper-v4"
    algo: str = "barpo"                  # spo | arpo | barpo
    total_steps: int = 2_000_000         # trained in whole iterations: 976 x 2048 = 1,998,848
    seed: int = 0
    eps: float = 0.075                   # radius of the ball; the CLI takes TASK_EPS by default
    kappa_schedule: str = "constant"     # BARPO's strength: constant | ramp
    kappa: float = 0.02                  # the constant, chosen by measurement (README)
    kappa_ramp: float = 0.5              # ramp: kappa goes 0 -> 1 over this fraction of training
    spo_guidance: float = 0.0            # weight g of the clean surrogate in ARPO/BARPO
    num_envs: int = 8
    vector_env: str = "sync"             # sync | async (make_envs)
    device: str = "auto"
    compile: str = "auto"                # on | off | auto: on for runs of COMPILE_MIN_STEPS or more
    checkpoint_every: int = 25           # iterations between checkpoints (about 51k steps)
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

    @property
    def iterations(self):
        return self.total_steps // self.steps_per_iteration


class InputError(ValueError):
    """Input this library cannot use (a task, a checkpoint, a setting); the message says why."""


def one_thread(fn):
    """Run fn with one torch thread. The networks are tiny: a second thread costs more than it
    gives, and where other processes share the cores, threads that wait on each other can make a
    call many times slower. Every entry point of the library does this, so a notebook is as fast
    as the command line."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(before)
    return wrapper


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
    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        raise InputError(f"unknown task '{env_id}' ({e})")
    try:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=vectorization,
                            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    except gym.error.DependencyNotInstalled as e:
        raise InputError(f"{env_id} needs a package that is not installed ({e})")
    obs_space, act_space = envs.single_observation_space, envs.single_action_space
    problem = None
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        problem = (f"{env_id} has observation space {obs_space}; the attacks need a 1-D Box "
                   f"(a vector of numbers)")
    elif not isinstance(act_space, gym.spaces.Box):
        problem = (f"{env_id} has action space {act_space}; these methods need a Box "
                   f"(continuous actions)")
    if problem:
        envs.close()
        raise InputError(problem)
    return envs


def env_state(envs):
    """What a sync vector env of MuJoCo tasks needs to go on exactly where it is (for resuming):
    each simulation's integration state, its time-limit counter and its random generator. None
    for other envs (async ones, other simulators): a resumed run starts new episodes there."""
    states = []
    for env in getattr(envs, "envs", [None]):
        sim = getattr(env, "unwrapped", None)
        if not hasattr(sim, "data"):
            return None
        import mujoco  # here, not at the top: other simulators' tasks run without it
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(sim.model, spec))
        mujoco.mj_getState(sim.model, sim.data, state, spec)
        states.append({"sim": torch.as_tensor(state), "elapsed": time_limit(env)._elapsed_steps,
                       "rng": sim.np_random.bit_generator.state})
    return states


def set_env_state(envs, states):
    import mujoco
    for env, state in zip(envs.envs, states):
        sim = env.unwrapped
        mujoco.mj_setState(sim.model, sim.data, state["sim"].numpy(),
                           mujoco.mjtState.mjSTATE_INTEGRATION)
        time_limit(env)._elapsed_steps = state["elapsed"]
        sim.np_random.bit_generator.state = state["rng"]


def time_limit(env):
    while not isinstance(env, gym.wrappers.TimeLimit):
        env = env.env
    return env


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

    def state(self):
        return {"mean": torch.as_tensor(self.mean), "var": torch.as_tensor(self.var),
                "count": float(self.count)}

    @classmethod
    def from_state(cls, state):
        norm = cls(len(state["mean"]))
        norm.mean, norm.var = state["mean"].cpu().numpy(), state["var"].cpu().numpy()
        norm.count = state["count"]
        return norm


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

    def __init__(self, envs, agent, obs_norm, cfg):
        self.envs, self.agent, self.obs_norm, self.cfg = envs, agent, obs_norm, cfg
        self.device = device = next(agent.parameters()).device
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

    def state(self):
        """Where the rollout stands between iterations, for a checkpoint to resume from."""
        return {"raw_obs": torch.as_tensor(self.raw_obs),
                "episode_return": torch.as_tensor(self.episode_return),
                "finished": [float(x) for x in self.finished],
                "reward_stats": self.reward_scaler.stats.state(),
                "reward_ret": torch.as_tensor(self.reward_scaler.ret)}

    def load_state(self, state):
        self.raw_obs, self.episode_return = state["raw_obs"].numpy(), state["episode_return"].numpy()
        self.finished = list(state["finished"])
        self.reward_scaler.stats = ObsNormalizer.from_state(state["reward_stats"])
        self.reward_scaler.ret = state["reward_ret"].numpy()

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
    """BARPO's lower level: f(o_hat) = kappa l(theta; o_hat) + (1 - kappa) KL(pi(.|o) || pi(.|o_hat)).

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
    flat above (notebook), so a linear ramp spends most of training at ARPO's strength; the value
    was chosen by measurement (README).

    Why global optima are preserved (ISA-MDP): if no o_hat in B_eps(o) changes the optimal
    action, the Bellman-optimal policy pi* is unaffected by every adversary in the ball, so
    pi* maximizes SPO's objective and every kappa's robust objective at once. Changing kappa
    reshapes the landscape away from pi* (which stationary points exist) but not its optimum.
    """
    if cfg.algo == "spo":
        return 0.0
    if cfg.algo == "arpo":
        return 1.0
    if cfg.kappa_schedule == "ramp":
        return min(1.0, progress / cfg.kappa_ramp)
    return cfg.kappa


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


def lower_level(agent, mb, adv, kappa, eps, cfg):
    """o_hat_t(kappa) for every sample of a minibatch: PGD on the adversary's objective against
    the current theta, with the minibatch's normalized advantages adv."""
    adversary = adversary_objective(agent, mb.obs, mb.actions, mb.old_logp, adv, cfg.clip, kappa)
    return pgd_attack(mb.obs, adversary, eps, cfg.pgd_steps)


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
        o_hat = lower_level(agent, mb, adv, kappa, eps, cfg)
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
    # fused: one kernel updates all parameters, where the default loops over them in Python.
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
    with torch.no_grad():  # torch.func.grad differentiates all the same; Adam updates in place
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
                            [], [s["step"] for s in state], foreach=False, capturable=True,
                            amsgrad=False, beta1=beta1, beta2=beta2, lr=lr, weight_decay=0.0,
                            eps=group["eps"], maximize=False)
    return stats


def compiled_minibatch_step(device, log=print):
    """The fast path's minibatch_step: same arguments, same update up to float rounding."""
    def eager(loss_module, names, optimizer, lrs, *args):
        return minibatch_step(loss_module.agent, optimizer, *args)

    traced = compile_or_fallback(functional_minibatch_step, eager, device, log)
    loss_modules = {}

    def step(agent, optimizer, mb, kappa, eps, cfg, robust):
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
        module = loss_modules[agent]
        return traced(module, module.names, optimizer, lrs, mb, kappa, eps, cfg, robust)

    return step


def compile_or_fallback(fn, fallback, device, log):
    """torch.compile(fn) as one graph (and on CUDA a replayed CUDA graph). Where compiling fails
    (no C++ compiler, an unsupported Python) the first call says so in one line and fallback,
    called with the same arguments, serves from then on. Random numbers are drawn as eagerly."""
    import torch._inductor.config
    torch._inductor.config.fallback_random = True
    compiled = torch.compile(fn, fullgraph=True,
                             mode="reduce-overhead" if device.type == "cuda" else None)
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


# ============================================================================================
# 7. The training run: iterations, metrics, and checkpoints to resume from
# ============================================================================================

METRICS = ["iteration", "env_steps", "wall_time_s", "sps", "episode_return", "kappa", "eps",
           "attack_kl", "surrogate", "value_loss"]


@one_thread
def train(cfg, envs, agent, obs_norm, metrics_path=None, checkpoint_path=None, resume=None,
          stop=None, log=print):
    """The whole training run: per iteration k pick kappa_k and eps_k, collect a rollout on clean
    observations, run the bilevel update, and record one metrics row.

    metrics_path: a CSV with a row per iteration. checkpoint_path: the full training state
    (`training_state`), written every cfg.checkpoint_every iterations, at the end, and on Ctrl-C
    (as of the last finished iteration), so that an interrupted run loses at most that many
    iterations. resume: such a state; training goes on from it exactly as if it had not stopped
    (MuJoCo tasks in sync envs; other envs start new episodes). stop(rows) -> True ends training
    early (the learned attackers' plateau rule). Returns the metrics rows of this call.
    """
    device = next(agent.parameters()).device
    optimizer = make_optimizer(agent, cfg)
    rollout = Rollout(envs, agent, obs_norm, cfg)
    step = compiled_minibatch_step(device, log) if wants_compile(cfg) else minibatch_step
    first, elapsed = (resume["iteration"], resume["wall_time_s"]) if resume else (0, 0.0)
    if resume:
        optimizer.load_state_dict(resume["optimizer"])
        rollout.load_state(resume["rollout"])
        if resume["envs"] is not None and env_state(envs) is not None:
            set_env_state(envs, resume["envs"])
        else:  # no simulator state to restore: new episodes
            rollout.raw_obs, _ = envs.reset(seed=cfg.seed + first)
            rollout.episode_return[:] = 0.0
        set_rng_state(resume["rng"])
    csv_file = open_metrics(metrics_path, keep_rows=first) if metrics_path else None
    writer = csv.DictWriter(csv_file, METRICS) if csv_file else None
    start = last_print = time.perf_counter()
    recent_return = float(np.mean(rollout.finished[-10:])) if rollout.finished else float("nan")
    rows, snapshot = [], None
    try:
        for k in range(first, cfg.iterations):
            t0 = time.perf_counter()
            progress = k / cfg.iterations
            for group, lr in zip(optimizer.param_groups, (cfg.lr_policy, cfg.lr_value)):
                group["lr"] = lr * (1.0 - progress)  # linear annealing to 0
            kappa = attack_strength(cfg, progress)
            eps = epsilon(cfg, progress) if kappa > 0 else 0.0
            advantages, returns = rollout.collect()
            batch = Batch(rollout.obs.flatten(0, 1), rollout.actions.flatten(0, 1),
                          rollout.logp.flatten(0, 1), advantages.flatten(), returns.flatten())
            surr, value_loss, attack_kl = bilevel_update(agent, optimizer, batch, cfg, kappa, eps, step)
            if rollout.finished:
                rollout.finished = rollout.finished[-10:]
                recent_return = float(np.mean(rollout.finished))
            now = time.perf_counter()
            row = dict(iteration=k + 1, env_steps=(k + 1) * cfg.steps_per_iteration,
                       wall_time_s=round(elapsed + now - start, 3),
                       sps=round(cfg.steps_per_iteration / (now - t0), 1),
                       episode_return=round(recent_return, 2), kappa=round(kappa, 4),
                       eps=round(eps, 5), attack_kl=round(attack_kl, 6), surrogate=round(surr, 5),
                       value_loss=round(value_loss, 5))
            rows.append(row)
            if writer:
                writer.writerow(row)
                csv_file.flush()
            done = k + 1 == cfg.iterations or (stop is not None and stop(rows))
            if checkpoint_path:
                snapshot = training_state(cfg, agent, obs_norm, optimizer, rollout, envs, row)
                if (k + 1) % cfg.checkpoint_every == 0 or done:
                    save_checkpoint(checkpoint_path, snapshot)
            if k == first:   # the time left is judged without the first iteration: it compiles
                after_first = now
            if now - last_print > 5 or done:
                last_print = now
                per_iteration = (now - after_first) / (k - first) if k > first else now - start
                left = per_iteration * (cfg.iterations - k - 1)
                bound = "<= " if stop else ""   # a stop rule may end it sooner
                robust = (f" | kappa {kappa:.2f} | eps {eps:.4f} | attack KL {attack_kl:.2e}"
                          if cfg.algo != "spo" else "")
                log(f"it {k + 1}/{cfg.iterations} | steps {row['env_steps']:,} | {row['sps']:,.0f} "
                    f"steps/s | left {bound}{left / 60:.1f} min | return {recent_return:.1f}{robust}")
            if done:
                break
    except KeyboardInterrupt:
        if snapshot is not None:  # the last finished iteration, not the half-updated agent
            save_checkpoint(checkpoint_path, snapshot)
            if csv_file:
                csv_file.close()
                trim_metrics(metrics_path, snapshot["training"]["iteration"])
        raise
    finally:
        if csv_file:
            csv_file.close()
    return rows


def open_metrics(path, keep_rows):
    """metrics.csv for appending, holding the rows of the first keep_rows iterations."""
    if keep_rows:
        trim_metrics(path, keep_rows)
    else:
        with open(path, "w", newline="") as f:
            csv.DictWriter(f, METRICS).writeheader()
    return open(path, "a", newline="")


def trim_metrics(path, rows):
    """Cut metrics.csv back to its first `rows` iterations: those a checkpoint holds."""
    path = Path(path)
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:rows + 1]))


def training_state(cfg, agent, obs_norm, optimizer, rollout, envs, row):
    """Everything a checkpoint needs to resume exactly: weights, statistics, optimizer, rollout
    and environments, random generators; copies, because training goes on changing them."""
    return {"format": CHECKPOINT_FORMAT, "agent": copy.deepcopy(agent.state_dict()),
            "obs_norm": copy.deepcopy(obs_norm.state()), "config": dataclasses.asdict(cfg),
            "obs_dim": agent.mu[0].in_features, "act_dim": agent.log_std.numel(),
            "env_steps": row["env_steps"],
            "training": {"iteration": row["iteration"], "wall_time_s": row["wall_time_s"],
                         "optimizer": copy.deepcopy(optimizer.state_dict()),
                         "rollout": copy.deepcopy(rollout.state()), "envs": env_state(envs),
                         "rng": rng_state()}}


def rng_state():
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ============================================================================================
# 8. Evaluation: the attacks on a frozen agent, and the robust return
# ============================================================================================

def make_attack(name, agent, eps, pgd_steps=10):
    """The attacks that need no training, as functions o -> o_hat: none, random, critic, mad.
    (rs, optimal and paad learn first: `train_robust_sarsa`, `train_learned_attack`.)"""
    if name in ("rs", "optimal", "paad"):
        raise InputError(f"the {name} attack is learned, not made: prepare it with attack_suite, "
                         f"or train_robust_sarsa / train_learned_attack")
    if name not in ATTACKS:
        raise InputError(f"unknown attack {name!r}; the attacks are {', '.join(ATTACKS)}")
    if name == "none" or eps == 0:
        return lambda obs: obs
    if name == "random":
        return lambda obs: obs + eps * (2 * torch.rand_like(obs) - 1)
    if name == "critic":
        return lambda obs: pgd_attack(obs, critic_objective(agent), eps, pgd_steps)
    return lambda obs: pgd_attack(obs, mad_objective(agent, obs), eps, pgd_steps)


@one_thread
def evaluate(agent, obs_norm, env_id, attack=None, episodes=50, seed=0):
    """Returns of `episodes` episodes with the deterministic action mu(attack(o)), the normalizer
    frozen. Episode i starts from reset(seed=seed + EVAL_SEED_OFFSET + i), so every attack faces
    the same episodes, and seed = the run's seed gives the command line's numbers; torch is seeded
    too, so that random noise and PGD's random starts repeat."""
    envs = make_envs(env_id, episodes)
    try:
        return run_episodes(agent, obs_norm, envs, env_id, attack, seed)
    finally:
        envs.close()


@one_thread
def film(agent, obs_norm, env_id, attack=None, seed=0, every=40, frames=6, size=240, camera="track"):
    """One evaluation episode (the first of `evaluate`'s) rendered offscreen: returns a frame every
    `every` steps (at most `frames`, as (step, rgb array)), the episode's return and its length.
    The MuJoCo tasks' "track" camera follows the body. Needs a renderer: MUJOCO_GL=egl or osmesa
    without a screen."""
    envs = gym.make_vec(env_id, num_envs=1, vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
                        render_mode="rgb_array", width=size, height=size, camera_name=camera)
    shots, steps = [], [0]

    def shoot(envs):
        if steps[0] % every == 0 and len(shots) < frames:
            shots.append((steps[0], envs.render()[0]))
        steps[0] += 1

    try:
        total = run_episodes(agent, obs_norm, envs, env_id, attack, seed, on_step=shoot)[0]
    finally:
        envs.close()
    return shots, total, steps[0]


def run_episodes(agent, obs_norm, envs, env_id, attack, seed, on_step=None):
    device = next(agent.parameters()).device
    check_sizes(agent, envs, env_id)
    attack = attack or (lambda obs: obs)
    torch.manual_seed(seed + EVAL_SEED_OFFSET)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    raw, _ = envs.reset(seed=seed + EVAL_SEED_OFFSET)
    returns, alive = np.zeros(envs.num_envs), np.ones(envs.num_envs, dtype=bool)
    while alive.any():
        if on_step:
            on_step(envs)
        obs = torch.as_tensor(obs_norm(raw), dtype=torch.float32, device=device)
        with torch.no_grad():
            action = agent.mu(attack(obs)).cpu().numpy()
        raw, reward, term, trunc, _ = envs.step(np.clip(action, low, high))
        returns += reward * alive
        alive &= ~(term | trunc)
    return returns


def interpolate(a, b, alpha):
    """The agent on the straight line between two agents (agent, obs_norm) of one task:
    theta(alpha) = (1 - alpha) theta_a + alpha theta_b, the normalizer's statistics likewise."""
    (agent_a, norm_a), (agent_b, norm_b) = a, b
    agent = copy.deepcopy(agent_a)
    theta_a, theta_b = agent_a.state_dict(), agent_b.state_dict()
    agent.load_state_dict({k: (1 - alpha) * theta_a[k] + alpha * theta_b[k] for k in theta_a})
    state_a, state_b = norm_a.state(), norm_b.state()
    norm = ObsNormalizer.from_state({k: (1 - alpha) * state_a[k] + alpha * state_b[k] for k in state_a})
    return agent, norm


def check_sizes(agent, envs, env_id):
    sizes = (agent.mu[0].in_features, agent.log_std.numel())
    task = (envs.single_observation_space.shape[0], envs.single_action_space.shape[0])
    if sizes != task:
        raise InputError(f"the agent has observation/action size {sizes[0]}/{sizes[1]} but "
                         f"{env_id} has {task[0]}/{task[1]}: it was trained on another task")


# --- robust sarsa: PGD on a learned Q of the agent --------------------------------------------

# The robust sarsa attack: victim steps of data (collected once), SARSA epochs per Q model, and
# the Q models' (action_radius, smoothness) settings. SA-PPO / ATLA sweep sarsa_eps in
# {0.02, 0.05, 0.1, 0.15, 0.2, 0.3} x sarsa_reg in {0.1, 0.3, 1, 3, 10} and keep the lowest
# return, because one setting can leave Q too rough or too flat to guide PGD; these six take
# every radius once and every weight at least once, at a fifth of the grid's cost.
ROBUST_SARSA = {"data_steps": 100_000, "epochs": 20,
                "models": [(0.02, 0.3), (0.05, 10.0), (0.1, 1.0), (0.15, 0.1), (0.2, 3.0), (0.3, 10.0)]}


def victim_transitions(victim, obs_norm, env_id, steps, seed=0):
    """The fixed victim's own rollouts for robust sarsa, as tensors (o, a, r, terminated, o', a'):
    actions a ~ pi(.|o), so that Q sees actions around mu(o); where an episode ended, o' is its
    last observation."""
    device = next(victim.parameters()).device
    tensor = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float32), device=device)
    torch.manual_seed(seed)
    envs = make_envs(env_id, 8)
    check_sizes(victim, envs, env_id)
    low, high = envs.single_action_space.low, envs.single_action_space.high
    raw, _ = envs.reset(seed=seed)
    data = {k: [] for k in ("obs", "action", "reward", "terminated", "next_obs", "next_action")}
    with torch.no_grad():
        for _ in range(steps // envs.num_envs):
            obs = tensor(obs_norm(raw))
            action = victim.policy(obs).sample()
            raw, reward, term, trunc, info = envs.step(np.clip(action.cpu().numpy(), low, high))
            next_raw = raw.copy()
            for i in np.flatnonzero(term | trunc):
                next_raw[i] = info["final_obs"][i]
            next_obs = tensor(obs_norm(next_raw))
            for key, value in (("obs", obs), ("action", action), ("reward", tensor(reward)),
                               ("terminated", tensor(term)), ("next_obs", next_obs),
                               ("next_action", victim.policy(next_obs).sample())):
                data[key].append(value)
    envs.close()
    return {k: torch.cat(v) for k, v in data.items()}


@one_thread
def train_robust_sarsa(data, action_radius, smoothness, epochs, seed=0, log=print):
    """Robust sarsa (Zhang et al. 2020): learn Q(o, a) of the *fixed* victim from its
    transitions (`victim_transitions`), to attack with.

    SARSA: Q(o, a) regresses on r / sigma_r + gamma (1 - terminated) Q'(o', a'), with Q' a copy of
    Q renewed every 100 minibatches. Robustness: the attack will ask Q about actions the victim
    takes at perturbed observations, so Q must be smooth around the actions it saw; the penalty
    smoothness * max over |a~ - a|_inf <= action_radius of (Q(o, a~) - Q(o, a))^2, its max found
    by PGD, removes the kinks an attack could exploit. Returns q(o, a) -> value.
    """
    torch.manual_seed(seed)
    device = data["obs"].device
    reward = data["reward"] / (data["reward"].std() + 1e-8)
    q_net = mlp(data["obs"].shape[1] + data["action"].shape[1], 1, out_gain=1.0).to(device)
    q = lambda o, a: q_net(torch.cat([o, a], -1)).squeeze(-1)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=1e-3)
    n = len(reward)
    for epoch in range(epochs):
        total = 0.0
        for i, idx in enumerate(torch.randperm(n, device=device).split(256)):
            if i % 100 == 0:
                frozen = copy.deepcopy(q_net)
            o, a = data["obs"][idx], data["action"][idx]
            with torch.no_grad():
                target = reward[idx] + 0.99 * (1 - data["terminated"][idx]) * frozen(
                    torch.cat([data["next_obs"][idx], data["next_action"][idx]], -1)).squeeze(-1)
                q_a = q(o, a)
            a_far = pgd_attack(a, lambda a_tilde: -(q(o, a_tilde) - q_a) ** 2, action_radius, 3)
            loss = (((q(o, a) - target) ** 2).mean()
                    + smoothness * ((q(o, a_far) - q(o, a)) ** 2).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx) / n
        log(f"  [rs {action_radius}/{smoothness}] epoch {epoch + 1}/{epochs}: loss {total:.4f}")
    q_net.requires_grad_(False)
    return q


def rs_objective(victim, q, obs):
    """Robust sarsa's attack: the victim acts mu(o_hat) but Q judges it at the true o."""
    return lambda o_hat: q(obs, victim.mu(o_hat))


def rs_attack(victim, q, obs, eps, pgd_steps):
    return pgd_attack(obs, rs_objective(victim, q, obs), eps, pgd_steps)


# --- learned attackers: SA-RL and PA-AD, trained by PPO --------------------------------------

class VictimUnderAttack(gym.vector.VectorWrapper):
    """The environment of a learned attacker, with a frozen victim inside.

    The attacker observes the victim's normalized observation o and acts u in [-1, 1]^dim;
    perturb(o, u) turns u into the o_hat the victim sees (`sarl_perturbation`,
    `paad_perturbation`); the victim acts mu(o_hat) deterministically, and the attacker receives
    minus the victim's reward. Training the attacker with the same PPO (`train`) gives it the
    most damaging policy it can learn.
    """

    def __init__(self, envs, victim, obs_norm, perturb, action_dim):
        super().__init__(envs)
        dim = envs.single_observation_space.shape[0]
        self.single_observation_space = gym.spaces.Box(-10.0, 10.0, (dim,), np.float64)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.victim, self.obs_norm, self.perturb = victim, obs_norm, perturb
        self.device = next(victim.parameters()).device
        self.act_low, self.act_high = envs.single_action_space.low, envs.single_action_space.high

    def reset(self, **kwargs):
        raw, info = self.env.reset(**kwargs)
        self.o = self.obs_norm(raw)
        return self.o, info

    @torch.no_grad()
    def step(self, u):
        obs = torch.as_tensor(self.o, dtype=torch.float32, device=self.device)
        u = torch.as_tensor(np.clip(u, -1.0, 1.0), dtype=torch.float32, device=self.device)
        action = self.victim.mu(self.perturb(obs, u)).cpu().numpy()
        raw, reward, term, trunc, info = self.env.step(np.clip(action, self.act_low, self.act_high))
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
    space; the actor realizes it, finding the o_hat in B_eps(o) that pushes the victim's mean
    action along d and far: it maximizes cos(mu(o_hat) - mu(o), d) + |mu(o_hat) - mu(o)|_2, the
    objective of PA-AD's MuJoCo code. The cosine alone is a weak actor: a tiny move exactly along
    d already scores 1, so nothing pushes the action further. PA-AD's code takes one signed
    gradient step of size eps from a small random start; here the same PGD as every other attack
    realizes it, which reaches a higher value of this objective than one step (it keeps the move
    along d as well as large). The director learns in the action's dimension instead of the
    observation's (SA-RL), an easier problem on tasks like Ant."""
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
def train_learned_attack(victim, obs_norm, env_id, kind, eps, steps=1_000_000, pgd_steps=10,
                         seed=0, curve_path=None, log=print):
    """Train an SA-RL (kind "optimal") or PA-AD (kind "paad") attacker on the victim with PPO
    (SPO): at least `steps` steps, then until its return plateaus (`plateaued`), at most twice
    `steps`. Its learning curve goes to curve_path. Returns the attack o -> o_hat and how long it
    trained."""
    env_probe = make_envs(env_id, 1)
    check_sizes(victim, env_probe, env_id)
    env_probe.close()
    obs_dim, act_dim = victim.mu[0].in_features, victim.log_std.numel()
    device = next(victim.parameters()).device
    cfg = Config(env=env_id, algo="spo", total_steps=2 * max(steps, 2048), seed=seed)
    if kind == "optimal":
        perturb, action_dim = sarl_perturbation(eps), obs_dim
    else:
        perturb, action_dim = paad_perturbation(victim, eps, pgd_steps), act_dim
        if wants_compile(cfg):  # the actor's PGD runs at every step of the attacker's training
            perturb = compile_or_fallback(perturb, perturb, device, log)
    envs = VictimUnderAttack(make_envs(env_id, cfg.num_envs), victim, obs_norm, perturb, action_dim)
    torch.manual_seed(seed)
    attacker, attacker_norm = Agent(obs_dim, action_dim).to(device), ObsNormalizer(obs_dim)
    victim.requires_grad_(False)
    try:
        rows = train(cfg, envs, attacker, attacker_norm, metrics_path=curve_path,
                     stop=plateaued(steps), log=lambda s: log(f"  [{kind} attack] " + s))
    finally:
        victim.requires_grad_(True)
        envs.close()

    def attack(obs):
        u = attacker.mu(torch.as_tensor(attacker_norm(obs.cpu().numpy()), dtype=torch.float32,
                                        device=obs.device))
        return perturb(obs, u.clamp(-1.0, 1.0))

    return attack, {"attacker_steps": rows[-1]["env_steps"],
                    "final_attacker_return": rows[-1]["episode_return"]}


# --- the suite ------------------------------------------------------------------------------

@one_thread
def attack_suite(agent, obs_norm, env_id, eps, attacks=tuple(ATTACKS), episodes=50, seed=0,
                 pgd_steps=10, attacker_steps=1_000_000, curve_prefix=None, on_result=None,
                 log=print):
    """Evaluate under each attack in turn: {attack: {mean, std, seconds, settings}} and the worst
    attack's name, the robust return being the lowest mean over the attacks other than none.
    seed is the run's seed: it sets the evaluation episodes and the learned attackers' seeds.
    curve_prefix: where the learned attackers' curves go (prefix-optimal.csv, prefix-paad.csv).
    on_result(table) is called after every attack, so that what finished can be kept."""
    table = {}
    for name in attacks:
        t0 = time.perf_counter()
        first_episode = seed + EVAL_SEED_OFFSET
        settings = {"eps": eps, "episode_seeds": [first_episode, first_episode + episodes - 1]}
        if name in ("critic", "mad", "rs"):
            settings["pgd_steps"] = pgd_steps
        candidates = None  # rs: several attacks, one per Q model, of which the lowest counts
        if name == "rs" and eps > 0:
            rs_seed = seed + ATTACKER_SEED_OFFSET["rs"]
            log(f"learning {len(ROBUST_SARSA['models'])} Q models of the agent for robust sarsa")
            data = victim_transitions(agent, obs_norm, env_id, ROBUST_SARSA["data_steps"], rs_seed)
            candidates = []
            for radius, smoothness in ROBUST_SARSA["models"]:
                q = train_robust_sarsa(data, radius, smoothness, ROBUST_SARSA["epochs"], rs_seed, log)
                attack = functools.partial(rs_attack, agent, q, eps=eps, pgd_steps=pgd_steps)
                candidates.append((attack, {"action_radius": radius, "smoothness": smoothness}))
            settings.update(data_steps=ROBUST_SARSA["data_steps"], epochs=ROBUST_SARSA["epochs"],
                            seed=rs_seed)
        elif name in ("optimal", "paad") and eps > 0:
            log(f"training the {name} attacker for at least {attacker_steps:,} steps")
            curve = f"{curve_prefix}-{name}.csv" if curve_prefix else None
            attack, trained = train_learned_attack(
                agent, obs_norm, env_id, name, eps, attacker_steps, pgd_steps,
                seed + ATTACKER_SEED_OFFSET[name], curve, log)
            settings.update(trained, min_attacker_steps=attacker_steps,
                            seed=seed + ATTACKER_SEED_OFFSET[name], curve=curve and Path(curve).name)
            if name == "paad":
                settings.update(pgd_steps=pgd_steps, actor_objective="cos+norm")
        else:
            attack = make_attack(name if eps > 0 else "none", agent, eps, pgd_steps)
        if candidates:
            tried = [(evaluate(agent, obs_norm, env_id, a, episodes, seed), model)
                     for a, model in candidates]
            settings["models"] = [{**model, "mean": float(r.mean()), "std": float(r.std())}
                                  for r, model in tried]
            returns = min(tried, key=lambda t: t[0].mean())[0]
        else:
            returns = evaluate(agent, obs_norm, env_id, attack, episodes, seed)
        table[name] = {"mean": float(returns.mean()), "std": float(returns.std()),
                       "seconds": round(time.perf_counter() - t0, 1), "settings": settings}
        log(f"  {name:8s} {returns.mean():9.1f} +- {returns.std():7.1f}   "
            f"({table[name]['seconds']:.1f} s)")
        if on_result:
            on_result(table)
    return table, worst_attack(table)


def worst_attack(table):
    attacked = [a for a in table if a != "none"] or list(table)
    return min(attacked, key=lambda a: table[a]["mean"])


# ============================================================================================
# 9. Checkpoints, evaluation records, the command line
# ============================================================================================

CHECKPOINT_FORMAT = "barpo-checkpoint-2"


def save_checkpoint(path, state):
    """Write a checkpoint (plain tensors and primitives, so that torch.load(weights_only=True)
    reads it) to a temporary file and rename it: a crash never leaves half a checkpoint."""
    tmp = Path(str(path) + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path, env_id=None, device="cpu"):
    """Returns (agent, obs_norm, state) of a checkpoint.pt; InputError for a missing, broken or
    foreign file, or (with env_id) an agent of another task. state["config"] is the run's
    Config, state["env_steps"] how far it trained, state.get("training") what resuming needs."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises many kinds for a truncated or foreign file
        raise InputError(f"{path} is not a checkpoint that barpo.py wrote ({type(e).__name__} "
                         f"while reading it)")
    formats = ("barpo-checkpoint-1", CHECKPOINT_FORMAT)
    if not isinstance(state, dict) or state.get("format") not in formats:
        raise InputError(f"{path} is a torch file but not a checkpoint that barpo.py wrote")
    if state["format"] == "barpo-checkpoint-1":  # before resuming existed: no training state
        state["obs_norm"] = {"mean": state["obs_mean"], "var": state["obs_var"],
                             "count": state["obs_count"]}
    agent = Agent(state["obs_dim"], state["act_dim"]).to(device)
    agent.load_state_dict(state["agent"])
    if env_id is not None and state["config"]["env"] != env_id:
        raise InputError(f"{path} is an agent for {state['config']['env']}, not for {env_id}")
    return agent, ObsNormalizer.from_state(state["obs_norm"]), state


def eval_record_name(attacks, eps, episodes):
    """A re-evaluation's file says what it holds, so it never replaces another record."""
    return f"eval-{'+'.join(attacks)}-eps{eps:g}-{episodes}ep.json"


def run_evaluation(agent, obs_norm, info, args, eps, record):
    """attack_suite with the command line's settings, the record written after every attack
    (marked partial until the last), and the table printed."""
    attacks = parse_attacks(args.attacks)
    result = {**{k: info[k] for k in ("env", "algo", "seed", "total_steps")}, "eps": eps,
              "episodes": args.episodes, "command": "python " + shlex.join(sys.argv),
              "made": made_on(), "partial": True, "returns": {}, "worst": None}

    def keep(table):
        result.update(returns=table, worst=worst_attack(table), partial=len(table) < len(attacks))
        tmp = Path(str(record) + ".tmp")
        tmp.write_text(json.dumps(result, indent=2))
        os.replace(tmp, record)

    try:
        attack_suite(agent, obs_norm, info["env"], eps, attacks, args.episodes, info["seed"],
                     info["pgd_steps"], args.attacker_steps, curve_prefix=record.with_suffix(""),
                     on_result=keep)
    except KeyboardInterrupt:
        done = ", ".join(result["returns"]) or "none"
        raise Interrupted(f"interrupted: evaluation stopped; the attacks finished ({done}) are "
                          f"kept in {record}, marked partial")
    print_table(result)
    print(f"\nwrote {record}")
    return result


def made_on():
    import platform
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.machine(),
            "processor": platform.processor() or "unknown", "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gymnasium": gym.__version__, "numpy": np.__version__}


def print_table(result):
    print(f"\n{result['env']}  {result['algo']}  seed {result['seed']}  eps {result['eps']}"
          f"  ({result['episodes']} episodes, deterministic actions)")
    print(f"{'attack':10s} {'mean':>10s} {'std':>9s}")
    for name, r in result["returns"].items():
        mark = "  <- worst attack: the robust return" if name == result["worst"] else ""
        print(f"{name:10s} {r['mean']:10.1f} {r['std']:9.1f}{mark}")


class UsageError(Exception):
    """Bad command-line input: main() prints the message as one line and exits with status 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with one line saying what was kept."""


TRAINING_FLAGS = ("algo", "total_steps", "seed", "kappa", "kappa_ramp", "spo_guidance", "pgd_steps",
                  "num_envs", "vector_env", "compile", "checkpoint_every", "init")


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="barpo.py",
        description="Train SPO, ARPO or BARPO on a gymnasium task with continuous observations "
                    "and actions, then evaluate it under observation attacks. With --resume, "
                    "continue an interrupted run; with --eval, only evaluate a saved agent.",
        epilog="attacks: " + "; ".join(f"{k}: {v}" for k, v in ATTACKS.items()) + ". The robust "
               "return is the lowest return over the attacks run.")
    p.add_argument("--env", default=None,
                   help="gymnasium task id (default Hopper-v4; with --eval, the checkpoint's task)")
    p.add_argument("--algo", default="barpo", choices=["spo", "arpo", "barpo"],
                   help="spo: standard PPO; arpo: PPO against the strongest PGD adversary; "
                        "barpo (default): an adversary of modulated strength kappa")
    p.add_argument("--total-steps", type=int, default=Config.total_steps,
                   help=f"environment steps of training, rounded down to whole iterations of "
                        f"{Config.steps_per_iteration} (default %(default)s: 1,998,848 steps, "
                        f"the published budget)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of torch and the environments; evaluation episodes use seed + "
                        f"{EVAL_SEED_OFFSET:,} on (default %(default)s)")
    p.add_argument("--eps", type=float, default=None,
                   help="radius of the L-infinity ball on the normalized observation; default "
                        "per task: " + ", ".join(f"{k} {v}" for k, v in TASK_EPS.items()) +
                        "; required for other tasks; with --eval, default the checkpoint's")
    p.add_argument("--kappa", type=float, default=None,
                   help=f"BARPO's adversary strength in [0, 1], held constant (default {Config.kappa}, "
                        "chosen by measurement, README)")
    p.add_argument("--kappa-ramp", type=float, default=None, metavar="FRACTION",
                   help="BARPO: instead of a constant kappa, ramp it from 0 to 1 over this "
                        "fraction of training (the schedule that wins the notebook's toy)")
    p.add_argument("--spo-guidance", type=float, default=Config.spo_guidance,
                   help="weight g >= 0 of the clean surrogate added to the ARPO/BARPO objective "
                        "(default %(default)s)")
    p.add_argument("--pgd-steps", type=int, default=Config.pgd_steps,
                   help="sign-gradient steps of every PGD attack, in training and evaluation "
                        "(default %(default)s)")
    p.add_argument("--num-envs", type=int, default=Config.num_envs,
                   help=f"parallel environments; must divide {Config.steps_per_iteration} "
                        f"(default %(default)s)")
    p.add_argument("--vector-env", default="sync", choices=["sync", "async"],
                   help="sync (default): step the environments one after the other; async: each "
                        "in its own process, faster only with more free cores than environments")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where the networks live; auto (default) is the CPU, because with networks "
                        "this small a GPU trains slower than its machine's CPU (README, Speed)")
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="run the minibatch update through torch.compile (the fast path): auto "
                        f"(default) for runs of {COMPILE_MIN_STEPS:,} steps or more, where it "
                        "repays its compile time; off is the eager reference code")
    p.add_argument("--checkpoint-every", type=int, default=Config.checkpoint_every, metavar="N",
                   help="write the resumable checkpoint every N iterations (default %(default)s, "
                        "about 51k steps); Ctrl-C also writes it")
    p.add_argument("--out", default=None,
                   help="training: the run folder (default runs/<env>-<algo>-seed<seed>); --eval: "
                        "the folder for the evaluation record (default the checkpoint's folder)")
    p.add_argument("--episodes", type=int, default=50,
                   help="evaluation episodes per attack (default %(default)s)")
    p.add_argument("--attacks", default=",".join(ATTACKS),
                   help="comma-separated evaluation attacks (default all: %(default)s; see below)")
    p.add_argument("--attacker-steps", type=int, default=1_000_000,
                   help="PPO steps at least for each learned attacker (optimal, paad), which then "
                        "trains on until its return plateaus, at most twice as long (default "
                        "%(default)s)")
    p.add_argument("--eval", default=None, metavar="CHECKPOINT",
                   help="only evaluate this checkpoint.pt; writes eval-<attacks>-eps<eps>-<n>ep.json "
                        "beside it (or into --out) and never replaces an existing record")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the interrupted run in RUN_DIR from its checkpoint, with the "
                        "settings it started with, then evaluate it")
    p.add_argument("--init", default=None, metavar="CHECKPOINT",
                   help="warm start from this checkpoint's weights and normalizer, e.g. an SPO agent")
    args = p.parse_args(argv)
    args.given = {name for name in TRAINING_FLAGS if getattr(args, name) != p.get_default(name)}
    return args


def config_from_args(args):
    """Turn command-line arguments into a Config, rejecting bad input with a UsageError."""
    env_id = args.env or "Hopper-v4"
    check_task(env_id)  # before anything else: nothing else matters for a task we cannot run
    ramp = args.kappa_ramp is not None
    if ramp and args.kappa is not None:
        raise UsageError("give --kappa (a constant strength) or --kappa-ramp (a ramp), not both")
    if (args.kappa is not None or ramp) and args.algo != "barpo":
        raise UsageError(f"--kappa and --kappa-ramp set BARPO's strength, but --algo is {args.algo} "
                         f"(spo is kappa 0, arpo kappa 1); drop them or use --algo barpo")
    cfg = Config(env=env_id, algo=args.algo, total_steps=args.total_steps, seed=args.seed,
                 eps=default_eps(env_id) if args.eps is None else args.eps,
                 kappa_schedule="ramp" if ramp else "constant",
                 kappa=Config.kappa if args.kappa is None else args.kappa,
                 kappa_ramp=args.kappa_ramp if ramp else Config.kappa_ramp,
                 spo_guidance=args.spo_guidance, pgd_steps=args.pgd_steps, num_envs=args.num_envs,
                 vector_env=args.vector_env, device=args.device, compile=args.compile,
                 checkpoint_every=args.checkpoint_every)
    check_eps(cfg.eps)
    checks = [(0.0 <= cfg.kappa <= 1.0,
               f"--kappa {cfg.kappa} is outside [0, 1]; give a strength in [0, 1]"),
              (0.0 < cfg.kappa_ramp <= 1.0,
               f"--kappa-ramp {cfg.kappa_ramp} must be a fraction in (0, 1]"),
              (cfg.spo_guidance >= 0,
               f"--spo-guidance {cfg.spo_guidance} is negative; give a weight >= 0"),
              (cfg.pgd_steps >= 1, f"--pgd-steps {cfg.pgd_steps} must be at least 1"),
              (cfg.num_envs >= 1 and cfg.steps_per_iteration % cfg.num_envs == 0,
               f"--num-envs {cfg.num_envs} must divide {cfg.steps_per_iteration} (e.g. 1, 4, 8, 16)"),
              (cfg.total_steps >= cfg.steps_per_iteration,
               f"--total-steps {cfg.total_steps} is less than one iteration; give at least "
               f"{cfg.steps_per_iteration}"),
              (cfg.checkpoint_every >= 1,
               f"--checkpoint-every {cfg.checkpoint_every} must be at least 1")]
    for ok, message in checks:
        if not ok:
            raise UsageError(message)
    check_eval_args(args)
    return cfg


def check_task(env_id):
    try:
        make_envs(env_id, 1).close()
    except InputError as e:
        raise UsageError(f"{e}; choose a task with continuous observations and actions, e.g. "
                         f"--env Hopper-v4")


def default_eps(env_id):
    eps = TASK_EPS.get(env_id.split("-")[0])
    if eps is None:
        raise UsageError(f"{env_id} has no default attack radius; give one with --eps "
                         f"(e.g. --eps 0.1)")
    return eps


def check_eps(eps):
    if eps < 0 or not math.isfinite(eps):
        raise UsageError(f"--eps {eps} must be a finite number >= 0")


def check_eval_args(args):
    if args.episodes < 1:
        raise UsageError(f"--episodes {args.episodes} must be at least 1")
    if args.attacker_steps < 2048:
        raise UsageError(f"--attacker-steps {args.attacker_steps} is less than one iteration; "
                         f"give at least 2048")
    parse_attacks(args.attacks)


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
        raise UsageError("--device cuda, but torch sees no CUDA device; use --device cpu or auto")
    return torch.device("cpu" if name == "auto" else name)


def read_checkpoint(path, flag, env_id=None, device="cpu"):
    """load_checkpoint for the command line: its errors become one line naming the flag."""
    try:
        agent, obs_norm, state = load_checkpoint(path, device=device)
    except InputError as e:
        raise UsageError(f"{e}; give {flag} the checkpoint.pt of a barpo.py run")
    task = state["config"]["env"]
    if env_id is not None and task != env_id:
        raise UsageError(f"{path} is an agent for {task}, not for {env_id}; use a checkpoint of "
                         f"{env_id}, or --env {task}")
    try:
        envs = make_envs(task, 1)
        check_sizes(agent, envs, task)
        envs.close()
    except InputError as e:
        raise UsageError(f"{path}: {e}; give {flag} a checkpoint of this task")
    return agent, obs_norm, state


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # The literature's tasks are the v4 ones; gymnasium suggests v5 at every start.
    warnings.filterwarnings("ignore", message=".*is out of date", category=DeprecationWarning)
    torch.set_num_threads(1)
    if args.eval and args.resume:
        raise UsageError("give --eval (evaluate a checkpoint) or --resume (continue a run), not both")
    if (args.eval or args.resume) and args.given:
        flags = ", ".join("--" + f.replace("_", "-") for f in sorted(args.given))
        what = "--eval evaluates an agent" if args.eval else "--resume continues a run"
        raise UsageError(f"{flags} set training, but {what} as it was trained; drop them")
    if args.eval:
        return evaluate_command(args)
    if args.resume:
        return resume_command(args)
    return train_command(args)


def evaluate_command(args):
    device = pick_device(args.device)
    agent, obs_norm, state = read_checkpoint(args.eval, "--eval", args.env, device)
    info = {**state["config"], "total_steps": state["env_steps"]}
    eps = info["eps"] if args.eps is None else args.eps
    check_eps(eps)
    check_eval_args(args)
    out_dir = Path(args.out or Path(args.eval).parent)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = out_dir / eval_record_name(parse_attacks(args.attacks), eps, args.episodes)
    if record.exists():
        raise UsageError(f"{record} already holds this evaluation; to make it again, give another "
                         f"--out folder (it is never replaced)")
    return run_evaluation(agent, obs_norm, info, args, eps, record)


def train_command(args):
    cfg = config_from_args(args)
    device = pick_device(args.device)
    out_dir = Path(args.out or f"runs/{cfg.env}-{cfg.algo}-seed{cfg.seed}")
    if any((out_dir / name).exists() for name in ("checkpoint.pt", "eval.json")):
        raise UsageError(f"{out_dir} already holds a run; continue it with --resume {out_dir}, or "
                         f"give another --out")
    torch.manual_seed(cfg.seed)
    envs = make_envs(cfg.env, cfg.num_envs, cfg.vector_env)
    obs_dim, act_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent, obs_norm = Agent(obs_dim, act_dim).to(device), ObsNormalizer(obs_dim)
    if args.init:
        agent, obs_norm, _ = read_checkpoint(args.init, "--init", cfg.env, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    return run_training(cfg, envs, agent, obs_norm, out_dir, args, resume=None)


def resume_command(args):
    run_dir = Path(args.resume)
    agent, obs_norm, state = read_checkpoint(run_dir / "checkpoint.pt", "--resume",
                                             device=pick_device(args.device))
    if "training" not in state:
        raise UsageError(f"{run_dir / 'checkpoint.pt'} holds an agent but no training state "
                         f"(written by an older barpo.py); evaluate it with --eval instead")
    cfg = Config(**state["config"])
    check_eval_args(args)
    envs = make_envs(cfg.env, cfg.num_envs, cfg.vector_env)
    return run_training(cfg, envs, agent, obs_norm, run_dir, args, resume=state["training"])


def run_training(cfg, envs, agent, obs_norm, run_dir, args, resume):
    """Train (or go on training) into run_dir, then evaluate into run_dir/eval.json."""
    trained = cfg.iterations * cfg.steps_per_iteration
    done = resume["iteration"] if resume else 0
    print(f"{cfg.algo.upper()} on {cfg.env}: {trained:,} steps ({cfg.iterations} iterations of "
          f"{cfg.steps_per_iteration}), eps {cfg.eps}, device {next(agent.parameters()).device}, "
          f"compile {'on' if wants_compile(cfg) else 'off'}, run folder {run_dir}"
          + (f"; resuming after iteration {done}" if resume else ""))
    checkpoint = run_dir / "checkpoint.pt"
    try:
        if done < cfg.iterations:
            rows = train(cfg, envs, agent, obs_norm, run_dir / "metrics.csv", checkpoint, resume)
            print(f"trained {trained:,} steps in {rows[-1]['wall_time_s']:.0f} s; evaluating")
    except KeyboardInterrupt:
        if not checkpoint.exists():
            raise Interrupted("interrupted before the first iteration finished; nothing to keep")
        saved = load_checkpoint(checkpoint)[2]["training"]["iteration"]
        raise Interrupted(f"interrupted: {checkpoint} holds iteration {saved} of {cfg.iterations}; "
                          f"continue with: python barpo.py --resume {run_dir}")
    finally:
        envs.close()
    record = run_dir / "eval.json"
    if record.exists() and not json.loads(record.read_text()).get("partial"):
        print(f"{run_dir} is trained and evaluated ({record}); nothing left to do")
        return json.loads(record.read_text())
    info = {**dataclasses.asdict(cfg), "total_steps": trained}
    return run_evaluation(agent, obs_norm, info, args, cfg.eps, record)


if __name__ == "__main__":
    try:
        main()
    except UsageError as e:
        print(f"barpo.py: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as e:
        print(f"\n{e or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
