"""A compiled kernel for the QTHA circuit: the whole circuit of one row in the CPU's L1 cache.

The torch simulator (:mod:`.simulator`) expresses the circuit as a few dozen batched tensor ops; each one
streams the batch's states through memory and pays torch's per-call dispatch, and at the adapter's sizes
(2^n = 16-256 amplitudes, 1-1,024 rows) that costs several times the arithmetic. This kernel runs one row
at a time from the first gate to the readout, its state (two planes of 2^n floats, real and imaginary)
staying in L1, with rows spread over threads (OpenMP, the runtime torch itself uses). Per row and layer:

    psi <- RY(theta_rows[l]) psi      per-row angles (l = 0: on |0...0>, i.e. the real product state)
    psi <- exp(i phi[2l]) psi         forward CRZ ring, a diagonal phase (cos/sin tables shared by rows)
    psi <- RY(theta_shared[l]) psi    first trainable RY layer
    psi <- exp(i phi[2l+1]) psi       reverse CRZ ring
    (after the last layer) psi <- RY(theta_shared[L]) psi,   z_i = <psi|Z_i|psi>

A plane is held as rows of W = 16 amplitudes (8 or 4 below 4 qubits), one SIMD vector each (GCC vector
extensions): an RY on one of the w lowest wires is a lane permutation (x -> x XOR 2^p), a multiply and a
fused multiply-add per row; an RY on a higher wire rotates pairs of whole rows. A decoded token's whole
adapter delta (``c = x @ P``, the circuit, ``c @ M_c + z @ M_q`` added into the output) is a third entry
point, so decoding pays one foreign call per adapted module. The backward pass is the adjoint method of
:mod:`.simulator` (un-compute psi by inverse gates while carrying lambda; every gradient from the
post-gate (psi, lambda)). The backward pass first recomputes each row's final state in that row's buffers
(the forward costs about a quarter of the adjoint pass), so nothing per row is kept between the passes but
the input angles; the per-row angle gradients are summed over layers in the kernel, and the shared
gradients per thread and then across threads.

The source is compiled once per machine with the system C++ compiler (``$CXX``, else ``c++``) into a
cache directory (``$QTHA_CACHE_DIR``, else ``~/.cache/qtha``), keyed by the source, the flags and the CPU,
and loaded with ctypes (no Python or torch headers: it builds in 5-20 s, once). Where there is
no compiler, or it fails, :func:`load` returns None and the simulator uses its torch path; setting
``QTHA_KERNEL=torch`` selects that path on purpose.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from .files import staged_file

__all__ = ["Kernel", "load"]

SOURCE = r"""
#include <cmath>
#include <cstdint>
#include <cstring>
#include <new>
#include <vector>
#include <omp.h>

namespace {

// Zeroed, 64-byte aligned storage (std::vector<V> would drop V's vector attribute as a template argument).
struct Aligned {
  void* p;
  explicit Aligned(size_t bytes) : p(::operator new[](bytes < 64 ? 64 : bytes, std::align_val_t(64))) {
    std::memset(p, 0, bytes);
  }
  ~Aligned() { ::operator delete[](p, std::align_val_t(64)); }
  Aligned(const Aligned&) = delete;
  Aligned& operator=(const Aligned&) = delete;
};

template <typename T> struct Index;
template <> struct Index<float> { typedef int32_t type; };
template <> struct Index<double> { typedef int64_t type; };

// A row of W amplitudes (W = 2^w: the state's w lowest wires) as one vector; a plane of the state
// (real or imaginary part, 2^n amplitudes) is R = 2^n / W such rows.
template <typename T, int W>
struct Kernel {
  typedef T V __attribute__((vector_size(W * sizeof(T))));
  typedef typename Index<T>::type I;
  typedef I M __attribute__((vector_size(W * sizeof(T))));

  int n, L, D, R, w;
  M swap[8];    // lane permutation x -> x ^ 2^p, p = lane bit
  V sgn[8];     // -1 where lane bit p is 0, +1 where it is 1
  Aligned phase_store;  // (2, 2L, R) rows: the ring phases' cos, then sin
  V *phase_c, *phase_s;

  Kernel(int n_, int L_, const T* phase_cs)
      : n(n_), L(L_), D(1 << n_), R((1 << n_) / W), phase_store(sizeof(T) * 4 * L_ * (1 << n_)) {
    w = 0;
    while ((1 << w) < W) ++w;
    for (int p = 0; p < w; ++p)
      for (int x = 0; x < W; ++x) { swap[p][x] = x ^ (1 << p); sgn[p][x] = (x >> p) & 1 ? T(1) : T(-1); }
    phase_c = static_cast<V*>(phase_store.p);
    phase_s = phase_c + (size_t)2 * L * R;
    for (int k = 0; k < 2 * L; ++k) {
      std::memcpy(phase_c + (size_t)k * R, phase_cs + (size_t)k * 2 * D, sizeof(T) * D);
      std::memcpy(phase_s + (size_t)k * R, phase_cs + (size_t)k * 2 * D + D, sizeof(T) * D);
    }
  }

  static inline T hsum(V v) {
    T s = 0;
    for (int i = 0; i < W; ++i) s += v[i];
    return s;
  }

  // f(lo, hi) for every pair of rows whose indices differ only in wire j < n - w (wires 0 .. n-w-1 index
  // rows, n-w .. n-1 lanes): lo has wire j's bit 0, hi has it 1.
  template <typename F>
  inline void row_pairs(int j, F&& f) const {
    const int st = 1 << (n - w - 1 - j);
    for (int base = 0; base < R; base += 2 * st)
      for (int k = 0; k < st; ++k) f(base + k, base + st + k);
  }

  // RY(theta_j) on every wire j; c, s: cos and sin of the half angles (sign -1: the transposes).
  inline void ry_layer(V* __restrict x, const T* c, const T* s, T sign) const {
    for (int j = 0; j < n - w; ++j) {
      const T cj = c[j], sj = sign * s[j];
      row_pairs(j, [&](int lo, int hi) {
        const V a = x[lo], b = x[hi];
        x[lo] = cj * a - sj * b;
        x[hi] = sj * a + cj * b;
      });
    }
    V ss[8];
    T cc[8];
    for (int p = 0; p < w; ++p) { const int j = n - 1 - p; cc[p] = c[j]; ss[p] = (sign * s[j]) * sgn[p]; }
    for (int r = 0; r < R; ++r) {
      V v = x[r];
      for (int p = 0; p < w; ++p) v = cc[p] * v + ss[p] * __builtin_shuffle(v, swap[p]);
      x[r] = v;
    }
  }

  inline void phase(V* __restrict re, V* __restrict im, int k, T sign) const {
    const V* pc = phase_c + (size_t)k * R;
    const V* ps = phase_s + (size_t)k * R;
    for (int r = 0; r < R; ++r) {
      const V a = re[r], b = im[r], cv = pc[r], sv = sign * ps[r];
      re[r] = a * cv - b * sv;
      im[r] = a * sv + b * cv;
    }
  }

  // out[j] += dL/dtheta_j of an RY on wire j = sum over pairs of lam1.psi0 - lam0.psi1
  inline void ry_grads(const V* pr, const V* pi, const V* lr, const V* li, T* out) const {
    for (int j = 0; j < n - w; ++j) {
      V acc = {};
      row_pairs(j, [&](int lo, int hi) { acc += lr[hi] * pr[lo] + li[hi] * pi[lo] - lr[lo] * pr[hi] - li[lo] * pi[hi]; });
      out[j] += hsum(acc);
    }
    // one pass over the rows, an independent accumulator per lane wire (no chain of dependent adds)
    V acc[8] = {};
    for (int r = 0; r < R; ++r) {
      const V a = pr[r], b = pi[r], la = lr[r], lb = li[r];
      for (int p = 0; p < w; ++p)
        acc[p] += la * __builtin_shuffle(a, swap[p]) + lb * __builtin_shuffle(b, swap[p]);
    }
    for (int p = 0; p < w; ++p) out[n - 1 - p] += hsum(acc[p] * sgn[p]);
  }

  // Undo RY(theta_j) on every wire of psi = (pr, pi) and lambda = (lr, li), adding dL/dtheta_j to out[j]:
  // ry_grads then ry_layer(.., -1) on the four planes, in one pass that shares their loads and the lane
  // shuffles. Wire j's gradient is read before its own RY is undone; the RYs on the other wires, undone
  // before or after, leave it unchanged (they commute with Y_j and act on psi and lambda alike).
  inline void ry_undo(V* __restrict pr, V* __restrict pi, V* __restrict lr, V* __restrict li, const T* c,
                      const T* s, T* out) const {
    for (int j = 0; j < n - w; ++j) {
      const T cj = c[j], sj = s[j];
      V acc = {};
      row_pairs(j, [&](int lo, int hi) {
        const V a0 = pr[lo], a1 = pr[hi], b0 = pi[lo], b1 = pi[hi];
        const V l0 = lr[lo], l1 = lr[hi], m0 = li[lo], m1 = li[hi];
        acc += l1 * a0 + m1 * b0 - l0 * a1 - m0 * b1;
        pr[lo] = cj * a0 + sj * a1;
        pr[hi] = cj * a1 - sj * a0;
        pi[lo] = cj * b0 + sj * b1;
        pi[hi] = cj * b1 - sj * b0;
        lr[lo] = cj * l0 + sj * l1;
        lr[hi] = cj * l1 - sj * l0;
        li[lo] = cj * m0 + sj * m1;
        li[hi] = cj * m1 - sj * m0;
      });
      out[j] += hsum(acc);
    }
    V ss[8];
    T cc[8];
    for (int p = 0; p < w; ++p) { const int j = n - 1 - p; cc[p] = c[j]; ss[p] = (-s[j]) * sgn[p]; }
    V acc[8] = {};
    for (int r = 0; r < R; ++r) {
      V a = pr[r], b = pi[r], la = lr[r], lb = li[r];
      for (int p = 0; p < w; ++p) {
        const V sa = __builtin_shuffle(a, swap[p]), sb = __builtin_shuffle(b, swap[p]);
        acc[p] += la * sa + lb * sb;
        a = cc[p] * a + ss[p] * sa;
        b = cc[p] * b + ss[p] * sb;
        la = cc[p] * la + ss[p] * __builtin_shuffle(la, swap[p]);
        lb = cc[p] * lb + ss[p] * __builtin_shuffle(lb, swap[p]);
      }
      pr[r] = a;
      pi[r] = b;
      lr[r] = la;
      li[r] = lb;
    }
    for (int p = 0; p < w; ++p) out[n - 1 - p] += hsum(acc[p] * sgn[p]);
  }

  // Undo ring phase k on psi and lambda, adding dL/dphi to out (2^n): -2 Im(conj(lambda) psi), then
  // phase(.., -1) on both, in one pass.
  inline void phase_undo(V* __restrict pr, V* __restrict pi, V* __restrict lr, V* __restrict li, int k,
                         T* out) const {
    const V* pc = phase_c + (size_t)k * R;
    const V* ps = phase_s + (size_t)k * R;
    V* g = reinterpret_cast<V*>(out);
    for (int r = 0; r < R; ++r) {
      const V a = pr[r], b = pi[r], la = lr[r], lb = li[r], cv = pc[r], sv = ps[r];
      g[r] -= T(2) * (la * b - lb * a);
      pr[r] = a * cv + b * sv;
      pi[r] = b * cv - a * sv;
      lr[r] = la * cv + lb * sv;
      li[r] = lb * cv - la * sv;
    }
  }

  inline void readout(const V* re, const V* im, T* z) const {
    for (int j = 0; j < n - w; ++j) {
      V acc = {};
      row_pairs(j, [&](int lo, int hi) { acc += re[lo] * re[lo] + im[lo] * im[lo] - re[hi] * re[hi] - im[hi] * im[hi]; });
      z[j] = hsum(acc);
    }
    for (int p = 0; p < w; ++p) {
      V acc = {};
      for (int r = 0; r < R; ++r) acc += re[r] * re[r] + im[r] * im[r];
      z[n - 1 - p] = -hsum(acc * sgn[p]);
    }
  }
};

template <typename T>
inline void product_state(T* v, const T* c, const T* s, int n) {
  v[0] = 1;
  int len = 1;
  for (int j = 0; j < n; ++j) {
    for (int k = len - 1; k >= 0; --k) { v[2 * k + 1] = v[k] * s[j]; v[2 * k] = v[k] * c[j]; }
    len *= 2;
  }
}

// The half-angle cos and sin of row b's RYs in layer l: read from the tables rc, rs (L, B, n), or computed
// from theta (L, B, n), or, with offsets (L, n), from theta (B, n) as theta[b] + offsets[l].
template <typename T>
inline void row_angles(const T* theta, const T* offsets, const T* rc, const T* rs, int l, int64_t b,
                       int64_t B, int n, T* c, T* s) {
  const int64_t idx = (l * B + b) * n;
  for (int j = 0; j < n; ++j) {
    if (rc) { c[j] = rc[idx + j]; s[j] = rs[idx + j]; continue; }
    const T t = offsets ? theta[b * n + j] + offsets[l * n + j] : theta[idx + j];
    c[j] = std::cos(t * T(0.5));
    s[j] = std::sin(t * T(0.5));
  }
}

// One row's circuit: per-row angles as in row_angles, shared_cs (L+1, 2, n) cos/sin of the shared half
// angles; leaves the final state in (re, im) and writes z (n).
template <typename T, int W>
inline void simulate_row(const Kernel<T, W>& k, const T* theta, const T* offsets, const T* rc, const T* rs,
                         const T* shared_cs, int64_t b, int64_t B, typename Kernel<T, W>::V* re,
                         typename Kernel<T, W>::V* im, T* z) {
  const int n = k.n, L = k.L;
  T c[32], s[32];
  row_angles(theta, offsets, rc, rs, 0, b, B, n, c, s);
  product_state(reinterpret_cast<T*>(re), c, s, n);
  std::memset(static_cast<void*>(im), 0, sizeof(T) * k.D);
  for (int l = 0; l < L; ++l) {
    if (l > 0) {
      row_angles(theta, offsets, rc, rs, l, b, B, n, c, s);
      k.ry_layer(re, c, s, T(1));
      k.ry_layer(im, c, s, T(1));
    }
    k.phase(re, im, 2 * l, T(1));
    const T* sh = shared_cs + l * 2 * n;
    k.ry_layer(re, sh, sh + n, T(1));
    k.ry_layer(im, sh, sh + n, T(1));
    k.phase(re, im, 2 * l + 1, T(1));
  }
  const T* sh = shared_cs + L * 2 * n;
  k.ry_layer(re, sh, sh + n, T(1));
  k.ry_layer(im, sh, sh + n, T(1));
  k.readout(re, im, z);
}

// phase_cs (2L, 2, D) cos/sin of the ring phases. Writes z (B, n) and, unless null, final_state (B, 2, D).
template <typename T, int W>
void forward(int n, int L, int64_t B, const T* theta, const T* offsets, const T* rc, const T* rs,
             const T* shared_cs, const T* phase_cs, T* z, T* final_state, int threads) {
  typedef typename Kernel<T, W>::V V;
  const Kernel<T, W> k(n, L, phase_cs);
  const int D = k.D, R = k.R;
#pragma omp parallel num_threads(threads) if (threads > 1 && B > 1)
  {
    Aligned buf(sizeof(V) * 2 * R);
    V *re = static_cast<V*>(buf.p), *im = re + R;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      simulate_row(k, theta, offsets, rc, rs, shared_cs, b, B, re, im, z + b * n);
      if (final_state) {
        std::memcpy(final_state + b * 2 * D, re, sizeof(T) * D);
        std::memcpy(final_state + b * 2 * D + D, im, sizeof(T) * D);
      }
    }
  }
}

// The decode form of a whole adapter on B rows: out[b] += c @ m_c + z(c) @ m_q with c = p_t x[b], z the
// circuit's readout for input angles c (row angles c + offsets[l]). x (B, d_in) and out (B, d_out) rows
// at strides ldx, ldo; p_t (n, d_in), m_c and m_q (n, d_out) row-major. One thread: a few rows.
template <int W>
void adapter_rows(int n, int L, int64_t B, int d_in, int d_out, const float* x, int64_t ldx,
                  const float* p_t, const float* m_c, const float* m_q, const float* offsets,
                  const float* shared_cs, const float* phase_cs, float* out, int64_t ldo) {
  typedef typename Kernel<float, W>::V V;
  const Kernel<float, W> k(n, L, phase_cs);
  Aligned buf(sizeof(V) * 2 * k.R);
  V *re = static_cast<V*>(buf.p), *im = re + k.R;
  for (int64_t b = 0; b < B; ++b) {
    const float* xb = x + b * ldx;
    float c[32], z[32];
    for (int i = 0; i < n; ++i) {  // c_i = p_t[i] . x_b, in 16 independent partial sums
      const float* p = p_t + (int64_t)i * d_in;
      float part[16] = {0};
      int q = 0;
      for (; q + 16 <= d_in; q += 16)
        for (int t = 0; t < 16; ++t) part[t] += p[q + t] * xb[q + t];
      float acc = 0;
      for (; q < d_in; ++q) acc += p[q] * xb[q];
      for (int t = 0; t < 16; ++t) acc += part[t];
      c[i] = acc;
    }
    simulate_row(k, c, offsets, static_cast<const float*>(nullptr), static_cast<const float*>(nullptr),
                 shared_cs, 0, 1, re, im, z);
    float* ob = out + b * ldo;
    for (int i = 0; i < n; ++i) {
      const float ci = c[i], zi = z[i];
      const float* mc = m_c + (int64_t)i * d_out;
      const float* mq = m_q + (int64_t)i * d_out;
      for (int j = 0; j < d_out; ++j) ob[j] += ci * mc[j] + zi * mq[j];
    }
  }
}

// Adjoint pass. Row b's angles in layer l: theta[b] + offsets[l] (theta (B, n), offsets (L, n)). Its final
// state is read from final_state (B, 2, D), or, where that is null, recomputed by the forward pass in the
// row's own buffers (the forward costs ~1/4 of the adjoint pass; nothing per row is then kept between the
// passes). grad_z (B, n) -> grad_theta (B, n) (the sum over layers of dL/d(row angles)), grad_offsets (L, n)
// (its sum over rows), grad_shared (L+1, n), grad_phase (2L, D): dL/dphi, phi the phase angles.
template <typename T, int W>
void backward(int n, int L, int64_t B, const T* theta, const T* offsets, const T* shared_cs,
              const T* phase_cs, const T* final_state, const T* grad_z, T* grad_theta, T* grad_offsets,
              T* grad_shared, T* grad_phase, int threads) {
  typedef typename Kernel<T, W>::V V;
  const Kernel<T, W> k(n, L, phase_cs);
  const int D = k.D, R = k.R;
  const int nt = (threads > 1 && B > 1) ? threads : 1;
  const size_t per_thread = (size_t)(L + 1) * n + (size_t)L * n;  // shared RY sums, then offset sums
  std::vector<T> acc_small((size_t)nt * per_thread, T(0));
  Aligned acc_phase_store(sizeof(V) * nt * 2 * L * R);
  V* acc_phase = static_cast<V*>(acc_phase_store.p);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num();
    T* my_shared = acc_small.data() + (size_t)t * per_thread;
    T* my_offsets = my_shared + (size_t)(L + 1) * n;
    T* my_phase = reinterpret_cast<T*>(acc_phase + (size_t)t * 2 * L * R);
    Aligned buf(sizeof(V) * 4 * R);
    V *pr = static_cast<V*>(buf.p), *pi = pr + R, *lr = pi + R, *li = lr + R;
    T c[32], s[32], gr[32], z[32];
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      if (final_state) {
        std::memcpy(static_cast<void*>(pr), final_state + b * 2 * D, sizeof(T) * D);
        std::memcpy(static_cast<void*>(pi), final_state + b * 2 * D + D, sizeof(T) * D);
      } else {
        simulate_row(k, theta, offsets, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr),
                     shared_cs, b, B, pr, pi, z);
      }
      // lambda = (sum_j g_j Z_j) psi; the weight built by doubling, like a product state
      T* wt = reinterpret_cast<T*>(lr);
      const T* gz = grad_z + b * n;
      wt[0] = 0;
      int len = 1;
      for (int j = 0; j < n; ++j) {
        for (int q = len - 1; q >= 0; --q) { wt[2 * q + 1] = wt[q] - gz[j]; wt[2 * q] = wt[q] + gz[j]; }
        len *= 2;
      }
      for (int r = 0; r < R; ++r) { li[r] = lr[r] * pi[r]; lr[r] = lr[r] * pr[r]; }
      const T* sh = shared_cs + L * 2 * n;
      k.ry_undo(pr, pi, lr, li, sh, sh + n, my_shared + L * n);
      T* gt = grad_theta + b * n;
      for (int j = 0; j < n; ++j) gt[j] = 0;
      for (int l = L - 1; l >= 0; --l) {
        k.phase_undo(pr, pi, lr, li, 2 * l + 1, my_phase + (size_t)(2 * l + 1) * D);
        sh = shared_cs + l * 2 * n;
        k.ry_undo(pr, pi, lr, li, sh, sh + n, my_shared + l * n);
        k.phase_undo(pr, pi, lr, li, 2 * l, my_phase + (size_t)(2 * l) * D);
        for (int j = 0; j < n; ++j) gr[j] = 0;
        if (l > 0) {
          row_angles(theta, offsets, static_cast<const T*>(nullptr), static_cast<const T*>(nullptr), l, b, B,
                     n, c, s);
          k.ry_undo(pr, pi, lr, li, c, s, gr);
        } else {
          k.ry_grads(pr, pi, lr, li, gr);  // layer 0's data RYs act on |0...0>: nothing left to undo
        }
        for (int j = 0; j < n; ++j) { gt[j] += gr[j]; my_offsets[l * n + j] += gr[j]; }
      }
    }
  }
  for (size_t i = 0; i < per_thread; ++i) {
    T v = 0;
    for (int t = 0; t < nt; ++t) v += acc_small[(size_t)t * per_thread + i];
    if (i < (size_t)(L + 1) * n) grad_shared[i] = v;
    else grad_offsets[i - (size_t)(L + 1) * n] = v;
  }
  const T* acc = reinterpret_cast<const T*>(acc_phase);
  for (int64_t i = 0; i < (int64_t)2 * L * D; ++i) {
    T v = 0;
    for (int t = 0; t < nt; ++t) v += acc[(size_t)t * 2 * L * D + i];
    grad_phase[i] = v;
  }
}

}  // namespace

extern "C" {
#define QTHA_EXPORT(T, SUFFIX)                                                                        \
  void qtha_forward_##SUFFIX(int n, int L, int64_t B, const T* theta, const T* off, const T* rc,    \
                             const T* rs, const T* shared_cs, const T* phase_cs, T* z, T* final_state, \
                             int th) {                                                                \
    if (n >= 4) forward<T, 16>(n, L, B, theta, off, rc, rs, shared_cs, phase_cs, z, final_state, th); \
    else if (n == 3) forward<T, 8>(n, L, B, theta, off, rc, rs, shared_cs, phase_cs, z, final_state, th); \
    else forward<T, 4>(n, L, B, theta, off, rc, rs, shared_cs, phase_cs, z, final_state, th);         \
  }                                                                                                   \
  void qtha_backward_##SUFFIX(int n, int L, int64_t B, const T* theta, const T* off, const T* shared_cs, \
                              const T* phase_cs, const T* final_state, const T* grad_z, T* grad_theta,  \
                              T* grad_off, T* grad_shared, T* grad_phase, int th) {                   \
    if (n >= 4)                                                                                       \
      backward<T, 16>(n, L, B, theta, off, shared_cs, phase_cs, final_state, grad_z, grad_theta,      \
                      grad_off, grad_shared, grad_phase, th);                                         \
    else if (n == 3)                                                                                  \
      backward<T, 8>(n, L, B, theta, off, shared_cs, phase_cs, final_state, grad_z, grad_theta,       \
                     grad_off, grad_shared, grad_phase, th);                                          \
    else                                                                                              \
      backward<T, 4>(n, L, B, theta, off, shared_cs, phase_cs, final_state, grad_z, grad_theta,       \
                     grad_off, grad_shared, grad_phase, th);                                          \
  }
QTHA_EXPORT(float, f32)
QTHA_EXPORT(double, f64)
void qtha_adapter_rows_f32(int n, int L, int64_t B, int d_in, int d_out, const float* x, int64_t ldx,
                           const float* p_t, const float* m_c, const float* m_q, const float* offsets,
                           const float* shared_cs, const float* phase_cs, float* out, int64_t ldo) {
  if (n >= 4) adapter_rows<16>(n, L, B, d_in, d_out, x, ldx, p_t, m_c, m_q, offsets, shared_cs, phase_cs, out, ldo);
  else if (n == 3) adapter_rows<8>(n, L, B, d_in, d_out, x, ldx, p_t, m_c, m_q, offsets, shared_cs, phase_cs, out, ldo);
  else adapter_rows<4>(n, L, B, d_in, d_out, x, ldx, p_t, m_c, m_q, offsets, shared_cs, phase_cs, out, ldo);
}
int qtha_kernel_version() { return 6; }
}
"""

# Most qubits the kernel takes: its per-row buffers hold 32 angles, and its per-thread phase-gradient sums
# (2L x 2^n floats) stay small up to here; wider circuits run on the torch simulator's chunked ops.
MAX_QUBITS = 16
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-Wno-psabi"]
_lock = threading.Lock()
_loaded: dict[str, Kernel | None] = {}


class Kernel:
    """The loaded library, with torch-tensor wrappers of its two entry points."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        for suffix in ("f32", "f64"):
            fwd = getattr(lib, f"qtha_forward_{suffix}")
            fwd.argtypes = [i32, i32, i64, p, p, p, p, p, p, p, p, i32]
            fwd.restype = None
            bwd = getattr(lib, f"qtha_backward_{suffix}")
            bwd.argtypes = [i32, i32, i64, p, p, p, p, p, p, p, p, p, p, i32]
            bwd.restype = None
        rows = lib.qtha_adapter_rows_f32
        rows.argtypes = [i32, i32, i64, i32, i32, p, i64, p, p, p, p, p, p, p, i64]
        rows.restype = None
        self._adapter_rows = rows
        self._fwd = {torch.float32: lib.qtha_forward_f32, torch.float64: lib.qtha_forward_f64}
        self._bwd = {torch.float32: lib.qtha_backward_f32, torch.float64: lib.qtha_backward_f64}

    def forward(
        self,
        z: Tensor,
        shared_cs: Tensor,
        phase_cs: Tensor,
        *,
        theta: Tensor | None = None,
        offsets: Tensor | None = None,
        row_cs: tuple[Tensor, Tensor] | None = None,
        final: Tensor | None = None,
        threads: int = 1,
    ) -> None:
        """Write <Z_i> into z ``(B, n)``, and the final states into ``final`` ``(B, 2, 2^n)`` if given.

        The per-row angles come as their half-angle ``row_cs = (cos, sin)``, each ``(L, B, n)``; or as
        ``theta`` ``(L, B, n)``; or, with ``offsets`` ``(L, n)``, as ``theta`` ``(B, n)`` plus ``offsets[l]``
        in layer l (the kernel takes the sines and cosines itself in the last two). ``shared_cs``
        ``(L+1, 2, n)`` and ``phase_cs`` ``(2L, 2, 2^n)`` are the shared tables. Every tensor contiguous,
        on the CPU, of z's dtype.
        """
        b, n = z.shape
        rc, rs = (None, None) if row_cs is None else (row_cs[0].data_ptr(), row_cs[1].data_ptr())
        self._fwd[z.dtype](
            n,
            phase_cs.shape[0] // 2,
            b,
            None if theta is None else theta.data_ptr(),
            None if offsets is None else offsets.data_ptr(),
            rc,
            rs,
            shared_cs.data_ptr(),
            phase_cs.data_ptr(),
            z.data_ptr(),
            None if final is None else final.data_ptr(),
            threads,
        )

    def bind_adapter_rows(
        self, n: int, n_layers: int, d_in: int, d_out: int, pointers: tuple[int, ...]
    ) -> Callable[[Tensor, Tensor], None]:
        """``rows(x, out)``: ``out += c @ M_c + z(c) @ M_q`` with ``c = x @ P``, for a few float32 rows (a
        decoded token), everything but ``x`` and ``out`` bound once: decoding calls it once per token per
        adapted module, where every Python step around the foreign call costs about as much as the call.

        ``x`` ``(B, d_in)`` and ``out`` ``(B, d_out)``: float32 with unit stride along a row. ``pointers``:
        data pointers of ``P^T`` ``(n, d_in)``, ``M_c`` and ``M_q`` ``(n, d_out)``, the layer offsets
        ``(L, n)``, ``shared_cs`` and ``phase_cs`` (:meth:`forward`), all contiguous float32 tensors that
        the caller keeps alive.
        """
        call, (p, m_c, m_q, offsets, shared, phases) = self._adapter_rows, pointers

        def rows(x: Tensor, out: Tensor) -> None:
            call(n, n_layers, x.shape[0], d_in, d_out, x.data_ptr(), x.stride(0), p, m_c, m_q, offsets,
                 shared, phases, out.data_ptr(), out.stride(0))  # fmt: skip

        return rows

    def backward(
        self,
        theta: Tensor,
        offsets: Tensor,
        shared_cs: Tensor,
        phase_cs: Tensor,
        grad_z: Tensor,
        threads: int,
        final: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """dL/d(theta ``(B, n)``, offsets ``(L, n)``, theta_shared ``(L+1, n)``, phi ``(2L, 2^n)``) from dL/dz.

        Row b's angles in layer l are ``theta[b] + offsets[l]`` (the offsets form of :meth:`forward`). Its
        final state is recomputed row by row inside the pass, so the forward need keep nothing per row
        but ``theta``; ``final`` ``(B, 2, 2^n)``, the states :meth:`forward` wrote, skips that (the same
        gradients, bit for bit: the recomputation runs the forward's own code).
        """
        b, n = theta.shape
        n_layers = offsets.shape[0]
        grad_theta = torch.empty_like(theta)
        grad_offsets = torch.empty_like(offsets)
        grad_shared = grad_z.new_empty(n_layers + 1, n)
        grad_phase = grad_z.new_empty(2 * n_layers, 2**n)
        self._bwd[grad_z.dtype](
            n,
            n_layers,
            b,
            theta.data_ptr(),
            offsets.data_ptr(),
            shared_cs.data_ptr(),
            phase_cs.data_ptr(),
            None if final is None else final.data_ptr(),
            grad_z.data_ptr(),
            grad_theta.data_ptr(),
            grad_offsets.data_ptr(),
            grad_shared.data_ptr(),
            grad_phase.data_ptr(),
            threads,
        )
        return grad_theta, grad_offsets, grad_shared, grad_phase


def load() -> Kernel | None:
    """The compiled kernel, built on first use and cached; None where it cannot be built (or
    ``QTHA_KERNEL=torch``), in which case the torch simulator runs."""
    if os.environ.get("QTHA_KERNEL", "").lower() == "torch":
        return None
    compiler = os.environ.get("CXX", "c++")
    key = compiler
    with _lock:
        if key not in _loaded:
            _loaded[key] = _build(compiler)
        return _loaded[key]


def _cpu_id() -> str:
    """What ``-march=native`` depends on: the CPU model and its feature flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    keep = [line for line in lines if line.startswith(("model name", "flags", "Features", "CPU part"))]
    return "\n".join(sorted(set(keep)))


def _build(compiler: str) -> Kernel | None:
    """Load the cached library for this source, flags and CPU, compiling it first if it is not there."""
    digest = hashlib.sha256(
        "\0".join([SOURCE, compiler, *_FLAGS, platform.machine(), _cpu_id()]).encode()
    ).hexdigest()[:16]
    root = Path(os.environ.get("QTHA_CACHE_DIR") or Path.home() / ".cache" / "qtha") / "kernels"
    target = root / f"qtha_circuit_{digest}.so"
    try:
        if not target.exists():
            _compile(compiler, target)
        return Kernel(ctypes.CDLL(str(target)))
    except (OSError, subprocess.SubprocessError) as exc:
        warnings.warn(
            f"QTHA circuit kernel unavailable ({exc}); using the torch simulator (slower). "
            "Install a C++ compiler (g++) or set QTHA_KERNEL=torch to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
        return None


def _compile(compiler: str, target: Path) -> None:
    """Compile :data:`SOURCE` into ``target`` (a few seconds; 10-20 s on a busy 2-core machine)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # staged: a concurrent builder finds a whole library or none; 0o755 as a linker makes it by default
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp, staged_file(target, mode=0o755) as out:
        src = Path(tmp) / "qtha_circuit.cpp"
        src.write_text(SOURCE)
        proc = subprocess.run(
            [compiler, *_FLAGS, str(src), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if proc.returncode != 0:
            raise OSError(f"{compiler} failed: {proc.stderr.strip()[-500:]}")
