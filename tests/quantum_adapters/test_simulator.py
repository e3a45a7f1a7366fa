"""The fast simulator against two independent executions of the circuit's definition.

1. A dense reference written here from ``circuit.gates()``: one explicit 2^n x 2^n matrix per gate,
   complex128, differentiated by autograd (small n only).
2. PennyLane's ``default.qubit`` QNode (``pennylane_backend``), which loops over the same gate list.

Outputs and gradients (inputs and weights) must agree to 1e-5 in float32 and to ~1e-10 in float64.
The simulator has two executions of its own, the compiled kernel (``_kernel``) and the torch ops it falls
back to; the exactness tests run on both (``execution`` fixture), and the two are held equal directly.
"""

from __future__ import annotations

import math

import pytest
import torch

import quantum_adapters._kernel as kernel_module
import quantum_adapters.simulator as simulator
from quantum_adapters.backends import execute
from quantum_adapters.circuit import gates
from quantum_adapters.pennylane_backend import expvals as pennylane_expvals
from quantum_adapters.pennylane_backend import installed_devices
from quantum_adapters.simulator import expvals


def _kernel_available() -> bool:
    return kernel_module.load() is not None


@pytest.fixture(params=["kernel", "torch"])
def execution(request, monkeypatch):
    """Run the test on the compiled kernel, then on the torch simulator (``QTHA_KERNEL=torch``)."""
    if request.param == "torch":
        monkeypatch.setenv("QTHA_KERNEL", "torch")
    elif not _kernel_available():
        pytest.skip("no C++ compiler here: the kernel cannot be built")
    return request.param


@pytest.fixture
def torch_simulator(monkeypatch):
    """For tests of the torch simulator's own machinery (chunks, dense forms, reused simulations)."""
    monkeypatch.setenv("QTHA_KERNEL", "torch")


def _gate_matrix(name: str, wires: tuple[int, ...], angle: torch.Tensor, n: int) -> torch.Tensor:
    """Explicit 2^n x 2^n matrix of one gate, wire 0 the most significant bit (PennyLane's order)."""
    angle = angle.to(torch.complex128)
    if name == "RY":
        c, s = torch.cos(angle / 2), torch.sin(angle / 2)
        one = torch.eye(2, dtype=torch.complex128)
        mats = [one] * n
        mats[wires[0]] = torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
        out = mats[0]
        for m in mats[1:]:
            out = torch.kron(out, m)
        return out
    control, target = wires
    x = torch.arange(2**n)
    c_bit = (x >> (n - 1 - control)) & 1
    t_bit = (x >> (n - 1 - target)) & 1
    phase = torch.where(c_bit == 1, torch.where(t_bit == 1, angle / 2, -angle / 2), torch.zeros_like(angle))
    return torch.diag(torch.exp(1j * phase))


def _dense_expvals(inputs: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """<Z_i> per row by multiplying out circuit.gates() as dense matrices (complex128, autograd-able)."""
    n_layers, _, n = weights.shape
    z_sign = 1.0 - 2.0 * ((torch.arange(2**n)[:, None] >> torch.arange(n - 1, -1, -1)) & 1).double()
    rows = []
    for row in inputs.reshape(-1, n):
        psi = torch.zeros(2**n, dtype=torch.complex128)
        psi[0] = 1
        for gate in gates(n, n_layers):
            angle = row[gate.param[1]] if gate.param[0] == "input" else weights[gate.param[1:]]
            psi = _gate_matrix(gate.name, gate.wires, angle, n) @ psi
        rows.append((psi.abs() ** 2) @ z_sign)
    return torch.stack(rows).reshape(inputs.shape)


def _random(shape, dtype, seed, scale=math.pi):
    gen = torch.Generator().manual_seed(seed)
    return ((torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * scale).to(dtype)


def _values_and_grads(fn, inputs, weights, grad_out):
    x, w = inputs.clone().requires_grad_(), weights.clone().requires_grad_()
    z = fn(x, w)
    gx, gw = torch.autograd.grad(z, (x, w), grad_out.to(z.dtype))
    return z.detach(), gx, gw


def _max_diff(a, b) -> float:
    return max((u.double() - v.double()).abs().max().item() for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize(("n", "n_layers", "batch"), [(2, 1, 3), (2, 3, 2), (3, 2, 4), (4, 3, 2), (5, 2, 3)])
def test_matches_dense_reference_float64(n, n_layers, batch, execution):
    x = _random((batch, n), torch.float64, seed=n)
    w = _random((n_layers, 4, n), torch.float64, seed=10 + n_layers, scale=2 * math.pi)
    g = _random((batch, n), torch.float64, seed=99)
    fast = _values_and_grads(expvals, x, w, g)
    dense = _values_and_grads(_dense_expvals, x, w, g)
    assert fast[0].dtype == torch.float64
    assert _max_diff(fast, dense) < 1e-10


@pytest.mark.parametrize(
    ("n", "n_layers", "batch"),
    [(2, 2, 4), (3, 2, 5), (5, 3, 6), (6, 2, 3), (8, 2, 7), (11, 1, 3)],  # 11 qubits: three qubit groups
)
def test_matches_pennylane_float32(n, n_layers, batch, execution):
    x = _random((batch, n), torch.float32, seed=n)
    w = _random((n_layers, 4, n), torch.float32, seed=n_layers, scale=2 * math.pi)
    g = _random((batch, n), torch.float32, seed=7)
    fast = _values_and_grads(expvals, x, w, g)
    penny = _values_and_grads(pennylane_expvals, x, w, g)
    assert fast[0].dtype == torch.float32 and fast[0].shape == (batch, n)
    assert _max_diff(fast, penny) < 1e-5


def test_leading_batch_shape(execution):
    n = 4
    x = _random((2, 3, n), torch.float32, seed=1)
    w = _random((2, 4, n), torch.float32, seed=2)
    g = _random((2, 3, n), torch.float32, seed=3)
    fast = _values_and_grads(expvals, x, w, g)
    assert fast[0].shape == (2, 3, n) and fast[1].shape == (2, 3, n)
    assert torch.equal(fast[0].reshape(6, n), expvals(x.reshape(6, n), w))
    penny = _values_and_grads(pennylane_expvals, x, w, g)
    assert _max_diff(fast, penny) < 1e-5
    single = expvals(x[0, 0], w)  # one row, no batch axis
    assert single.shape == (n,) and torch.allclose(single, fast[0][0, 0])


def test_many_chunks_with_a_partial_last_one(monkeypatch, torch_simulator):
    """Rows run in chunks; force 4-row chunks (10 rows -> 4, 4, 2) and compare with the dense reference."""
    n = 3
    monkeypatch.setattr(simulator, "_CHUNK_AMPLITUDES", 4 * 2**n)
    x = _random((10, n), torch.float64, seed=5)
    w = _random((3, 4, n), torch.float64, seed=6)
    g = _random((10, n), torch.float64, seed=7)
    assert _max_diff(_values_and_grads(expvals, x, w, g), _values_and_grads(_dense_expvals, x, w, g)) < 1e-10


def test_dtypes(execution):
    x, w = _random((3, 4), torch.float32, seed=0), _random((2, 4, 4), torch.float32, seed=1)
    assert expvals(x, w).dtype == torch.float32
    assert expvals(x.double(), w).dtype == torch.float64  # float64 inputs run in float64
    half = expvals(x.half(), w)
    assert half.dtype == torch.float16 and torch.allclose(
        half.float(), expvals(x.half().float(), w), atol=1e-3
    )
    with pytest.raises(TypeError, match=r"expected a floating-point tensor; got dtype torch\.int64"):
        expvals(torch.zeros(3, 4, dtype=torch.long), w)
    with pytest.raises(ValueError, match=r"expected shape \(\.\.\., 4\).*got \(3, 5\)"):
        expvals(torch.zeros(3, 5), w)


def test_gradcheck_float64(execution):
    x = _random((2, 3), torch.float64, seed=3).requires_grad_()
    w = _random((2, 4, 3), torch.float64, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(expvals, (x, w), eps=1e-6, atol=1e-7)


def test_no_grad_and_inference_mode_give_the_same_values(execution):
    x = _random((5, 6), torch.float32, seed=8).requires_grad_()
    w = _random((3, 4, 6), torch.float32, seed=9).requires_grad_()
    z = expvals(x, w)
    assert z.requires_grad
    with torch.no_grad():
        z_no_grad = expvals(x, w)
    with torch.inference_mode():
        z_inference = expvals(x.detach(), w.detach())
    assert not z_no_grad.requires_grad
    assert torch.equal(z.detach(), z_no_grad) and torch.equal(z_no_grad, z_inference)


def test_memory_saved_for_backward_is_flat_in_depth(execution):
    """Autograd keeps small angle tables, never a state per layer: the torch simulator keeps the final
    state, the kernel (which recomputes it in its backward pass) not even that."""
    n, batch = 6, 64

    def saved_bytes(n_layers: int) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        x = _random((batch, n), torch.float32, seed=0).requires_grad_()
        w = _random((n_layers, 4, n), torch.float32, seed=1).requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            expvals(x, w)
        return total

    one_state = batch * 2**n * 8  # complex64
    shallow, deep = saved_bytes(1), saved_bytes(8)
    if execution == "torch":
        assert shallow >= one_state  # the final state is kept
    else:
        assert deep < one_state / 2  # the input angles (B x n) and the weights' tables, no state at all
    assert deep - shallow < one_state  # 7 more layers add only angle tables, no states


def test_pennylane_sampling_with_shots_is_close_to_exact():
    x, w = _random((2, 3), torch.float32, seed=11), _random((1, 4, 3), torch.float32, seed=12)
    sampled = execute(x, w, backend="pennylane", device="default.qubit", shots=4000)
    assert sampled.shape == (2, 3) and sampled.dtype == torch.float32
    assert (sampled - expvals(x, w)).abs().max() < 0.1  # ~6 standard deviations of 4000 shots


def test_pennylane_devices_and_errors():
    devices = installed_devices()
    assert "default.qubit" in devices and devices == sorted(devices)
    x, w = torch.zeros(2, 3), torch.zeros(1, 4, 3)
    with pytest.raises(
        ValueError, match=r"expected a device in \[.*'default\.qubit'.*\]; got 'no\.such\.device'"
    ):
        pennylane_expvals(x, w, device="no.such.device")
    with pytest.raises(ValueError, match="expected None or a positive integer; got 0"):
        pennylane_expvals(x, w, shots=0)
    with pytest.raises(ValueError, match=r"expected shape \(\.\.\., 3\); got \(2, 4\)"):
        pennylane_expvals(torch.zeros(2, 4), w)


def test_execute_pennylane_backend_on_lightning():
    """A second PennyLane device runs the same circuit (diff_method chosen by PennyLane)."""
    if "lightning.qubit" not in installed_devices():
        pytest.skip("lightning.qubit not installed")
    x, w = _random((2, 3), torch.float32, seed=13), _random((2, 4, 3), torch.float32, seed=14)
    z = execute(x, w, backend="pennylane", device="lightning.qubit")
    assert torch.allclose(z, expvals(x, w), atol=1e-5)


# ---- FrozenCircuit: the inference form (fixed weights, dense layer unitaries) ---------------------------


@pytest.mark.parametrize(
    ("n", "n_layers", "rows"),
    [(2, 1, 3), (3, 2, 5), (4, 4, 1), (4, 3, 7), (5, 3, 2), (6, 2, 3), (7, 2, 1), (8, 2, 4)],
)
def test_frozen_circuit_matches_dense_reference(n, n_layers, rows, execution):
    """Every formulation the inference path uses (Kronecker-basis rotations up to 5 qubits, the XOR gather
    above) against the gate-by-gate reference, float64 and float32."""
    x, w = _random((rows, n), torch.float64, 40 + n), _random((n_layers, 4, n), torch.float64, 50 + n)
    frozen = simulator.FrozenCircuit(w)
    assert rows * 4**n <= simulator._FROZEN_ROW_MATRIX_FLOATS["gather"], (
        "this case must exercise the dense path"
    )
    with torch.no_grad():
        dense = _dense_expvals(x, w) if n <= 6 else expvals(x, w)
        assert (frozen(x) - dense).abs().max() < 1e-10
        z32 = simulator.FrozenCircuit(w.float())(x.float())
    assert z32.dtype == torch.float32
    assert (z32.double() - dense).abs().max() < 1e-5


def test_frozen_circuit_keeps_batch_shape_and_hands_long_inputs_to_the_general_simulator(
    monkeypatch, torch_simulator
):
    w = _random((3, 4, 6), torch.float64, 1)
    frozen = simulator.FrozenCircuit(w)
    x = _random((2, 5, 6), torch.float64, 2)
    with torch.no_grad():
        reference = expvals(x, w)
        assert frozen(x).shape == (2, 5, 6)
        assert (frozen(x) - reference).abs().max() < 1e-10
        assert frozen(x[:0]).shape == (0, 5, 6)
        assert frozen._simulation is None, "10 rows at n = 6 fit the dense path"
        # 10 rows x 64 x 64 floats exceed a 4,096-float budget: the general simulator answers instead
        monkeypatch.setitem(simulator._FROZEN_ROW_MATRIX_FLOATS, "gather", 4096)
        assert (frozen(x) - reference).abs().max() < 1e-10
        assert frozen._simulation is not None
        # up to 5 qubits the dense form takes long inputs too (its rotations are one matmul)
        small = simulator.FrozenCircuit(w[..., :4])
        long = _random((3000, 4), torch.float64, 6)
        assert (small(long) - expvals(long, w[..., :4])).abs().max() < 1e-10
        assert small._simulation is None


def test_frozen_circuit_too_wide_for_dense_unitaries_reuses_one_general_simulation(torch_simulator):
    """8 qubits x 8 layers (8 MB of dense unitaries): the general simulator's set-up is built once and
    rebound to every call, whatever its row count, and agrees with a fresh simulation each time."""
    w = _random((8, 4, 8), torch.float32, 5)
    frozen = simulator.FrozenCircuit(w)
    assert not frozen.dense and simulator.frozen_bytes(8, 8) == 8 * 2**20
    with torch.no_grad():
        for rows in (1, 7, 1, 600, 3, 2, 5, 9):
            x = _random((rows, 8), torch.float32, rows)
            torch.testing.assert_close(frozen(x), expvals(x, w), rtol=0, atol=1e-5)
    simulation = frozen._simulation
    assert simulation is not None and len(simulation.workspaces) <= 4


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_product_state_is_one_matmul_of_trig_features(n):
    freq, shift, w = simulator._product_state_fourier(n, torch.device("cpu"))
    x = _random((6, n), torch.float64, n) * 2
    v = torch.ones(6, 1, dtype=torch.float64)
    for j in range(n):  # kron_j [cos x_j/2, sin x_j/2], wire 0 most significant
        v = (
            v[:, :, None] * torch.stack([torch.cos(x[:, j] / 2), torch.sin(x[:, j] / 2)], 1)[:, None]
        ).flatten(1)
    assert (torch.sin(x @ freq + shift) @ w - v).abs().max() < 1e-12


def test_frozen_circuit_refuses_wrong_inputs():
    frozen = simulator.FrozenCircuit(torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"expected shape \(\.\.\., 3\); got \(2, 4\)"):
        frozen(torch.zeros(2, 4))


def test_circuit_layer_uses_the_frozen_form_without_gradients_and_follows_weight_changes():
    from quantum_adapters.layer import QuantumCircuitLayer

    layer = QuantumCircuitLayer(4, 3)
    x = _random((6, 4), torch.float32, 3)
    with torch.no_grad():
        first = layer(x)
        frozen = layer.inference_form()
        assert isinstance(frozen, simulator.FrozenCircuit) and layer.inference_form() is frozen  # kept
        torch.testing.assert_close(first, frozen(x), rtol=0, atol=0)
        torch.testing.assert_close(first, expvals(x, layer.weights), rtol=0, atol=1e-5)
        layer.weights.add_(0.3)  # an in-place change (an optimiser step) invalidates the cached unitaries
        second = layer(x)
        assert layer.inference_form() is not frozen
    torch.testing.assert_close(second, expvals(x, layer.weights.detach()), rtol=0, atol=1e-5)
    assert (second - first).abs().max() > 1e-3
    # with gradients, the differentiable simulator runs: the inputs get a gradient
    xg = x.clone().requires_grad_()
    layer(xg).sum().backward()
    assert xg.grad is not None and layer.weights.grad is not None
    # circuits too large for dense unitaries run the general simulator, set up once
    wide = QuantumCircuitLayer(8, 8)
    with torch.no_grad():
        out = wide(_random((2, 8), torch.float32, 4))
    assert not wide.inference_form().dense and out.shape == (2, 8)


def test_inference_mode_first_use_leaves_autograd_and_later_modes_working(execution):
    """Serving builds the cached plan and simulations under ``torch.inference_mode``; training and
    ``no_grad`` evaluation in the same process must still work with them afterwards."""
    n = 9  # a size no other test builds a plan for
    w = _random((2, 4, n), torch.float64, 8)
    x = _random((3, n), torch.float64, 9)
    with torch.inference_mode():  # as the layer does, lazily, in the first served request
        frozen = simulator.FrozenCircuit(w.float())  # builds the plan, as its first user
        first = frozen(x.float())  # and the reused simulation
    with torch.no_grad():
        torch.testing.assert_close(frozen(x[:2].float()), first[:2], rtol=0, atol=1e-6)  # new workspace
    with torch.inference_mode():
        dense = simulator.FrozenCircuit(w[..., :4].float())  # the dense form, built in inference mode
    with torch.no_grad():
        torch.testing.assert_close(
            dense(x[:, :4].float()), expvals(x[:, :4], w[..., :4]).float(), rtol=0, atol=1e-5
        )
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    expvals(xg, wg).sum().backward()  # the plan's tables take part in autograd
    assert xg.grad is not None and wg.grad is not None


# ---- the compiled kernel against the torch simulator ------------------------------------------------------


def _on(path: str, monkeypatch, fn, *args):
    """``fn(*args)`` with the kernel (``path='kernel'``) or the torch simulator."""
    if path == "torch":
        monkeypatch.setenv("QTHA_KERNEL", "torch")
    try:
        return fn(*args)
    finally:
        monkeypatch.delenv("QTHA_KERNEL", raising=False)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("n", "n_layers", "batch"), [(2, 2, 5), (3, 1, 4), (4, 4, 37), (6, 3, 9), (8, 8, 70)]
)
def test_kernel_equals_torch_simulator(monkeypatch, n, n_layers, batch, threads):
    """Values and gradients of the compiled kernel and of the torch ops: float64 to 1e-10, float32 to 1e-5,
    on one thread and split over two (per-thread gradient sums)."""
    if not _kernel_available():
        pytest.skip("no C++ compiler here: the kernel cannot be built")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-5)):
            x = _random((batch, n), dtype, seed=n + batch)
            w = _random((n_layers, 4, n), dtype, seed=n_layers, scale=2 * math.pi)
            g = _random((batch, n), dtype, seed=3)
            compiled = _on("kernel", monkeypatch, _values_and_grads, expvals, x, w, g)
            plain = _on("torch", monkeypatch, _values_and_grads, expvals, x, w, g)
            assert compiled[0].dtype == dtype
            assert _max_diff(compiled, plain) < tol
            with torch.no_grad():  # the inference forms, a decoded row and a prompt's rows
                frozen = _on("kernel", monkeypatch, simulator.FrozenCircuit, w)
                assert frozen.kernel is not None
                for rows in (x[:1], x):
                    assert (frozen(rows) - plain[0][: rows.shape[0]]).abs().max() < tol
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(("n", "n_layers", "batch"), [(2, 3, 5), (3, 2, 4), (5, 3, 9), (8, 4, 33)])
def test_kernel_backward_recomputing_the_final_state_equals_reading_it(n, n_layers, batch, threads):
    """The adjoint pass that recomputes each row's final state (what training runs) gives the gradients
    of the one that reads the states the forward pass wrote, bit for bit."""
    kernel = kernel_module.load()
    if kernel is None:
        pytest.skip("no C++ compiler here: the kernel cannot be built")
    for dtype in (torch.float64, torch.float32):
        theta = _random((batch, n), dtype, seed=n)
        w = _random((n_layers, 4, n), dtype, seed=n_layers, scale=2 * math.pi)
        w_rows, theta_shared, phi = simulator._weight_terms(simulator._plan(n, theta.device), w)
        offsets = torch.cat([w_rows.new_zeros(1, n), w_rows.squeeze(1)]).contiguous()
        shared, phases = simulator._shared_table(theta_shared), simulator._phase_table(phi)
        z, final = theta.new_empty(batch, n), theta.new_empty(batch, 2, 2**n)
        kernel.forward(z, shared, phases, theta=theta, offsets=offsets, final=final, threads=threads)
        grad_z = _random((batch, n), dtype, seed=7)
        recomputed = kernel.backward(theta, offsets, shared, phases, grad_z, threads)
        read = kernel.backward(theta, offsets, shared, phases, grad_z, threads, final=final)
        for a, b in zip(recomputed, read, strict=True):
            assert torch.equal(a, b)
        assert recomputed[0].abs().max() > 0 and recomputed[2].abs().max() > 0  # real gradients


def test_without_a_compiler_the_torch_simulator_runs(monkeypatch, tmp_path):
    """A missing compiler is one warning, then the torch path: same values, nothing raised."""
    monkeypatch.setattr(kernel_module, "_loaded", {})
    monkeypatch.setenv("QTHA_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.warns(RuntimeWarning, match=r"kernel unavailable .*using the torch simulator"):
        assert kernel_module.load() is None
    x, w = _random((4, 3), torch.float64, 1), _random((2, 4, 3), torch.float64, 2)
    g = _random((4, 3), torch.float64, 3)
    assert _max_diff(_values_and_grads(expvals, x, w, g), _values_and_grads(_dense_expvals, x, w, g)) < 1e-10
    assert not list(tmp_path.glob("kernels/*.so"))


def test_kernel_is_cached_and_loads_in_a_fresh_process():
    """The built library is reused by a new process (no rebuild) and gives the same values there."""
    import subprocess
    import sys

    if not _kernel_available():
        pytest.skip("no C++ compiler here: the kernel cannot be built")
    code = (
        "import torch, quantum_adapters._kernel as k, quantum_adapters.simulator as s\n"
        "k._compile = None\n"  # a rebuild would fail: the cached file must be found
        "x = torch.linspace(-3, 3, 12, dtype=torch.float64).reshape(3, 4)\n"
        "w = torch.linspace(0, 6, 32, dtype=torch.float64).reshape(2, 4, 4)\n"
        "assert k.load() is not None\n"
        "print(repr(s.expvals(x, w).sum().item()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    x = torch.linspace(-3, 3, 12, dtype=torch.float64).reshape(3, 4)
    w = torch.linspace(0, 6, 32, dtype=torch.float64).reshape(2, 4, 4)
    assert abs(float(out.strip()) - _dense_expvals(x, w).sum().item()) < 1e-10


@pytest.mark.parametrize("rows", [1, 3, 20])  # a decoded token, a few rows, a prompt (separate ops)
def test_layer_inference_form_with_the_kernel_equals_the_differentiable_delta(execution, monkeypatch, rows):
    """The layer's folded inference form (one kernel call per decoded row, separate ops for a prompt) equals
    base + delta computed with gradients on, to float32 rounding."""
    from torch import nn

    from quantum_adapters import QTHAConfig
    from quantum_adapters.layer import QTHALinear

    torch.manual_seed(0)
    layer = QTHALinear(nn.Linear(24, 20), "default", QTHAConfig(r=4, n_layers=3, dropout=0.0))
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "qtha_" in name:
                p.copy_(torch.randn_like(p) * 0.5)
    layer.eval()
    calls = []
    original = simulator._LinearRows.__call__

    def spy(self, *args):
        calls.append(original(self, *args))
        return calls[-1]

    monkeypatch.setattr(simulator._LinearRows, "__call__", spy)
    x = torch.randn(rows, 1, 24)
    with torch.enable_grad():
        reference = layer.base_layer(x) + layer.delta("default", x)
    with torch.inference_mode():
        fused = layer(x)
        folded = layer.add_fused("default", x, layer.base_layer(x))  # the same through the general path
    torch.testing.assert_close(fused, reference.detach(), rtol=1e-5, atol=1e-5)  # values up to ~40
    torch.testing.assert_close(folded, reference.detach(), rtol=1e-5, atol=1e-5)
    if execution == "kernel":  # the one-call form ran (and wrote) exactly for a token's few rows
        assert calls and all(c == (rows <= simulator._KERNEL_INLINE_ROWS) for c in calls)
    else:  # no kernel: no one-call form is bound, the separate ops run
        assert calls == []


def test_a_decoded_token_with_a_non_contiguous_base_output_gets_its_delta(execution):
    """The decoding shortcut adds into the base output in place; where that output is not contiguous (a
    base layer that returns a strided view) it must not write into a copy: the delta still arrives."""
    import torch.nn.functional as F
    from torch import nn

    from quantum_adapters import QTHAConfig
    from quantum_adapters.layer import QTHALinear

    class StridedLinear(nn.Linear):
        def forward(self, x):
            b, t, _ = x.shape  # (B, T, d_out) laid out as (B, d_out, T): no (B * T, d_out) view of it exists
            out = torch.empty(b, self.out_features, t).permute(0, 2, 1)
            return out.copy_(F.linear(x, self.weight, self.bias))

    torch.manual_seed(0)
    layer = QTHALinear(StridedLinear(24, 20), "default", QTHAConfig(r=4, n_layers=2, init_weights=False))
    layer.eval()
    x = torch.randn(2, 2, 24)  # four rows: a decoded token's few
    with torch.enable_grad():
        reference = layer.base_layer(x) + layer.delta("default", x)
    with torch.inference_mode():
        assert not layer.base_layer(x).is_contiguous()
        out = layer(x)
    assert (reference - layer.base_layer(x)).abs().max() > 1e-3  # the delta is not negligible
    torch.testing.assert_close(out, reference.detach(), rtol=1e-5, atol=1e-5)


def test_the_inference_form_follows_a_state_dict_loaded_with_assign(execution):
    """load_state_dict(assign=True) replaces the parameter objects the folded maps were built from: the
    next decoded token uses the loaded weights."""
    from torch import nn

    from quantum_adapters import QTHAConfig
    from quantum_adapters.layer import QTHALinear

    torch.manual_seed(0)
    config = QTHAConfig(r=4, n_layers=2, init_weights=False)
    layer, other = (QTHALinear(nn.Linear(24, 20), "default", config).eval() for _ in range(2))
    x = torch.randn(1, 1, 24)
    with torch.inference_mode():
        before = layer(x)  # builds and caches the folded maps
    layer.load_state_dict(other.state_dict(), assign=True)
    with torch.inference_mode():
        after, expected = layer(x), other(x)
    assert (before - expected).abs().max() > 1e-3  # the two layers differ
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
