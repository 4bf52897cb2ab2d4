"""Controllers that solve MuJoCo bodies from their state: LQR on the model's own linearisation,
energy-shaping swing-up, Jacobian-transpose PD reaching, PD to a target.

Every gain is derived from the loaded MuJoCo model (mujoco.mjd_transitionFD around the goal state),
so the experts follow the model's masses and lengths rather than constants copied from a paper.
"""

import copy

import mujoco
import numpy as np
import scipy.linalg


def linearize(model, qpos, steps: int = 1):
  """(A, B) of x' = A x + B u over `steps` physics steps with u held (zero-order hold), around
  `qpos` at rest; x = (qpos - qpos0, qvel) in the model's tangent space."""
  if model.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4:
    # Finite differences do not support RK4; the semi-implicit Euler model has the same linearisation
    # to first order in the time step.
    model = copy.deepcopy(model)
    model.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
  data = mujoco.MjData(model)
  data.qpos[:] = qpos
  mujoco.mj_forward(model, data)
  nx = 2 * model.nv + model.na
  a, b = np.zeros((nx, nx)), np.zeros((nx, model.nu))
  mujoco.mjd_transitionFD(model, data, 1e-6, True, a, b, None, None)
  a_n, b_n = np.eye(nx), np.zeros_like(b)
  for _ in range(steps):
    a_n, b_n = a @ a_n, a @ b_n + b
  return a_n, b_n


def dlqr(a, b, q, r) -> np.ndarray:
  """K of the discrete-time LQR u = -K x."""
  p = scipy.linalg.solve_discrete_are(a, b, q, r)
  return np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)


def balance_gain(model, steps: int, q_diag, r: float) -> np.ndarray:
  """LQR gain that holds the model at qpos = 0 (every pole upright) with an env step of `steps`."""
  a, b = linearize(model, np.zeros(model.nq), steps)
  return dlqr(a, b, np.diag(q_diag), r * np.eye(model.nu))


def lqr_policy(model, data, steps: int, q_diag, r: float, low, high):
  """u = -K (qpos, qvel), clipped to the actuator range (ctrl units)."""
  k = balance_gain(model, steps, q_diag, r)

  def control():
    x = np.concatenate([data.qpos, data.qvel])
    return np.clip(-k @ x, low, high)

  return control


def reach_torque(model, data, tip_body: str, target, joints, kp: float, kd: float):
  """Jacobian-transpose PD: joint torques that pull body `tip_body` towards `target` (x, y)."""
  jacp = np.zeros((3, model.nv))
  mujoco.mj_jacBody(model, data, jacp, None, model.body(tip_body).id)
  error = np.asarray(target[:2]) - data.body(tip_body).xpos[:2]
  j = jacp[:2, joints]
  return j.T @ (kp * error) - kd * data.qvel[joints]


def pole_energy(model, data, body: str, hinge_axis_index: int = 1) -> tuple[float, float]:
  """(energy, energy upright at rest) of a pole about its hinge: rotational kinetic + potential
  (relative to the hinge), from the body's mass, inertia and centre of mass."""
  b = model.body(body)
  mass = float(b.mass[0])
  com = data.xipos[b.id] - data.xanchor[model.body_jntadr[b.id]]
  length = float(np.linalg.norm(com))
  inertia = float(b.inertia[hinge_axis_index]) + mass * length**2
  omega = float(data.qvel[model.jnt_dofadr[model.body_jntadr[b.id]]])
  g = -float(model.opt.gravity[2])
  return 0.5 * inertia * omega**2 + mass * g * float(com[2]), mass * g * length


def two_link_ik(target, l1: float, l2: float, elbow_now: float) -> np.ndarray:
  """Joint angles of a planar 2-link arm with its tip at `target` (x, y), the elbow branch nearest
  the current elbow angle; out-of-reach targets get the arm pointing at them."""
  x, y = float(target[0]), float(target[1])
  c2 = np.clip((x * x + y * y - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0)
  candidates = []
  for elbow in (np.arccos(c2), -np.arccos(c2)):
    shoulder = np.arctan2(y, x) - np.arctan2(l2 * np.sin(elbow), l1 + l2 * np.cos(elbow))
    candidates.append(np.array([shoulder, elbow]))
  return min(candidates, key=lambda q: abs(wrap(q[1] - elbow_now)))


def wrap(angle):
  return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def cartpole_swingup(model, data, k, pump: float = 3.0, capture_cos: float = 0.85, centre: float = 0.5):
  """Energy pumping (cart force along the pole's swing, scaled by the missing energy, with a spring
  to the track's centre) until the pole is within ~30 degrees of upright, then the LQR gain `k`."""
  theta = float(data.qpos[1])
  if np.cos(theta) > capture_cos:
    x = np.concatenate([data.qpos, data.qvel])
    x[1] = wrap(theta)
    return -k @ x
  energy, upright = pole_energy(model, data, "pole_1")
  swing = np.sign(data.qvel[1] * np.cos(theta)) or 1.0  # at rest, start either way
  return np.array([pump * (energy - upright) * swing - centre * (data.qpos[0] + 0.5 * data.qvel[0])])
