"""Many devices: JAX's own mesh and named shardings, no process pool.

Each solver has a batch axis whose rows are independent, and takes an optional
``mesh=``: the rows are split across the mesh's devices while everything else
(the model, alpha-vector sets, node networks, policy parameters) is replicated:

* point-based (``hsvi``, ``pbvi``, ``perseus``): the beliefs backed up together
  (HSVI's trials and their beliefs at each depth, PBVI's and Perseus's batches);
* NVI: the particles of a belief and the sampled states of the train step;
* GPOMDP / CONJPOMDP: the chains of the gradient estimate.

Without a mesh nothing changes. With one, the solver runs under
:func:`jax.set_mesh` and its jitted steps put a sharding constraint on the batch
axis (:func:`constrain`) and keep the state they return replicated
(:func:`replicated`: each step then compiles once); XLA partitions the rest
(GSPMD) and inserts the collectives (the reductions over the batch). Results
equal the single-device ones up to the order of floating-point sums.

One host, all its devices::

    from jaxpomdp import distributed
    mesh = distributed.make_mesh()                    # every device: GPUs, TPU cores
    result = point_based.solve(model, mesh=mesh)

Several hosts (a TPU pod slice, GPU nodes): call :func:`initialize` (JAX's
``jax.distributed.initialize``) first in every process, then the same code; the
mesh spans the devices of all hosts. On CPU, ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
(set before JAX starts) gives ``N`` devices to try it with.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

__all__ = ["AXIS", "make_mesh", "initialize", "using", "constrain", "replicated", "replicate"]

#: The name of the mesh axis the batch rows are split over.
AXIS = "batch"


def make_mesh(devices: Optional[Sequence[Any]] = None) -> Mesh:
    """A one-axis mesh (axis :data:`AXIS`) over ``devices`` (default: every device, all hosts)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices, dtype=object), (AXIS,), axis_types=(AxisType.Auto,))


def initialize(*args, **kwargs) -> None:
    """Joins this process to a multi-host run: ``jax.distributed.initialize(*args, **kwargs)``.

    On Cloud TPU and SLURM/Open MPI clusters the arguments are found
    automatically; elsewhere give ``coordinator_address="host:port"``,
    ``num_processes`` and ``process_id``. Call it before anything else touches JAX.
    """
    jax.distributed.initialize(*args, **kwargs)


@contextlib.contextmanager
def using(mesh: Optional[Mesh]):
    """Runs the block under ``mesh`` (``jax.set_mesh``); no-op for None."""
    if mesh is None:
        yield
        return
    if AXIS not in mesh.axis_names:
        raise ValueError(f"the mesh needs an axis named {AXIS!r} (make it with distributed.make_mesh); "
                         f"it has {mesh.axis_names}")
    with jax.set_mesh(mesh):
        yield


def _current() -> Optional[Any]:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or AXIS not in mesh.axis_names:
        return None
    return mesh


def constrain(x: Any, axis: int = 0) -> Any:
    """Inside a jitted function: the arrays of ``x`` sharded along ``axis`` over the
    current mesh's :data:`AXIS` (replicated elsewhere). Without a mesh, or where the
    size is not a multiple of the number of devices, ``x`` is returned as it is."""
    mesh = _current()
    if mesh is None:
        return x
    n = mesh.shape[AXIS]

    def one(a):
        if n == 1 or a.ndim <= axis or a.shape[axis] % n:
            return a
        spec = [None] * a.ndim
        spec[axis] = AXIS
        return jax.lax.with_sharding_constraint(a, PartitionSpec(*spec))

    return jax.tree.map(one, x)


def replicated(x: Any) -> Any:
    """Inside a jitted function: the arrays of ``x`` replicated over the current mesh
    (unchanged without one). A solver step puts this on the state it returns: left to
    itself, XLA may split an output along the batch axis (e.g. the stacked node
    networks), and the next call, seeing other input shardings, would compile again."""
    mesh = _current()
    if mesh is None or mesh.shape[AXIS] == 1:
        return x
    return jax.tree.map(lambda a: jax.lax.with_sharding_constraint(a, PartitionSpec()), x)


def replicate(tree: Any, mesh: Optional[Mesh]) -> Any:
    """``tree``'s arrays copied to every device of ``mesh`` (unchanged without one): for
    arrays a user placed on one device (``jax.device_put``) that a solver on the
    mesh should see everywhere. The solvers need no such call for arrays they make."""
    if mesh is None:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec())

    def put(x):
        if isinstance(x, (jax.Array, np.ndarray)) or np.isscalar(x):
            return jax.device_put(x, sharding)
        return x

    return jax.tree.map(put, tree)
