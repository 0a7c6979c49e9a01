// EMMA's per-token recurrence on the CPU, forward and backward, as plain loops around MKL calls
// (trainables/emma/picard.py): the DEQ's Picard chain and the liquid cell.
//
// Per Picard iteration the eager loop makes ~6 ATen calls on 16 x 256 tensors; each costs 2-6 us of dispatch,
// allocation and bookkeeping against ~8 us for the matmul itself. Here an iteration is two gemm calls (MKL's,
// which torch's CPU build exports: the same kernels `torch.addmm` reaches), one vector tanh (MKL VML) and one
// fused elementwise pass; a liquid-cell step is one gemm, three VML calls and one pass. Row-major tensors
// throughout; `mm` maps them onto column-major BLAS. Built with -ffp-contract=off: no fused multiply-adds the
// eager loop does not make either.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

extern "C" {
void sgemm_(const char*, const char*, const int*, const int*, const int*, const float*, const float*, const int*,
            const float*, const int*, const float*, float*, const int*);
void dgemm_(const char*, const char*, const int*, const int*, const int*, const double*, const double*, const int*,
            const double*, const int*, const double*, double*, const int*);
void vsTanh(int, const float*, float*);
void vdTanh(int, const double*, double*);
void vsExp(int, const float*, float*);
void vdExp(int, const double*, double*);
void vsLn(int, const float*, float*);
void vdLn(int, const double*, double*);
}

namespace {

void gemm(int m, int n, int k, const float* a, int lda, const float* b, int ldb, float beta, float* c, int ldc) {
  const float one = 1.f;
  const char nt = 'N';
  sgemm_(&nt, &nt, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
}

void gemm(int m, int n, int k, const double* a, int lda, const double* b, int ldb, double beta, double* c,
          int ldc) {
  const double one = 1.;
  const char nt = 'N';
  dgemm_(&nt, &nt, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
}

void tanh_inplace(float* x, int n) { vsTanh(n, x, x); }
void tanh_inplace(double* x, int n) { vdTanh(n, x, x); }
void exp_of(const float* x, float* y, int n) { vsExp(n, x, y); }
void exp_of(const double* x, double* y, int n) { vdExp(n, x, y); }
void ln_of(const float* x, float* y, int n) { vsLn(n, x, y); }
void ln_of(const double* x, double* y, int n) { vdLn(n, x, y); }

// c (rows x n) = beta c + a (rows x k) w, w (k x n) row-major; in column-major terms c^T = w^T a^T. Transposed
// weights come in as contiguous copies: MKL's small gemm is about 2x slower on a transposed operand.
template <typename T>
void mm(const T* a, const T* w, int rows, int k, int n, T beta, T* c) {
  gemm(n, rows, k, w, n, a, k, beta, c, n);
}

template <typename T>
std::tuple<std::vector<int64_t>, double> forward_impl(const torch::Tensor& c, torch::Tensor& iterates,
                                                      torch::Tensor& gates, torch::Tensor& zs, const torch::Tensor& w1z,
                                                      const torch::Tensor& w2, const torch::Tensor& b2, double keep,
                                                      int64_t max_iter, double tol, bool store) {
  const int n_tok = c.size(0), b = c.size(1), hidden = c.size(2), d = w1z.size(0);
  const int bd = b * d, bh = b * hidden;
  const T *cp = c.data_ptr<T>(), *w1 = w1z.data_ptr<T>(), *w2p = w2.data_ptr<T>(), *bias = b2.data_ptr<T>();
  T *zp = iterates.data_ptr<T>(), *gp = gates.data_ptr<T>(), *out = zs.data_ptr<T>();
  const T drift = static_cast<T>(keep - 1);
  std::vector<T> step(bd);
  std::vector<int64_t> counts(n_tok);
  double residual = 0.;
  int64_t n = 0;  // the slot of the current iterate (every iteration gets its own when store)
  for (int t = 0; t < n_tok; ++t) {
    int64_t i = 0;
    while (i < max_iter) {
      T* z = zp + n * bd;
      T* g = gp + (store ? n : 0) * bh;
      std::memcpy(g, cp + static_cast<int64_t>(t) * bh, sizeof(T) * bh);       // a_i = z_i W1z + c_t
      mm<T>(z, w1, b, d, hidden, T(1), g);
      tanh_inplace(g, bh);                                                       // g_i = tanh(a_i)
      for (int r = 0; r < b; ++r) std::memcpy(step.data() + r * d, bias, sizeof(T) * d);
      mm<T>(g, w2p, b, hidden, d, T(1), step.data());                     // g_i W2 + b2
      T* z_next = zp + (store ? n + 1 : n) * bd;
      T largest = 0;
      for (int j = 0; j < bd; ++j) {
        T s = step[j];
        if (keep != 1.) s = s + drift * z[j];                                    // - (1 - keep) z_i
        largest = std::max(largest, static_cast<T>(std::fabs(s)));
        z_next[j] = z[j] + s;                                                    // z_{i+1} = z_i + step
      }
      if (store) ++n;
      ++i;
      residual = largest;
      if (0 < tol && i < max_iter && largest < tol) break;                       // the last one stops anyway
    }
    counts[t] = i;
    std::memcpy(out + static_cast<int64_t>(t) * bd, zp + n * bd, sizeof(T) * bd);
  }
  return {counts, residual};
}

template <typename T>
torch::Tensor backward_impl(const torch::Tensor& into_z, const torch::Tensor& gates, const std::vector<int64_t>& counts,
                            const torch::Tensor& w1z_t, const torch::Tensor& w2_t, double keep, torch::Tensor& d_a,
                            torch::Tensor& d_step, torch::Tensor& d_c) {
  const int n_tok = into_z.size(0), b = into_z.size(1), d = into_z.size(2), hidden = gates.size(2);
  const int bd = b * d, bh = b * hidden;
  const T *inj = into_z.data_ptr<T>(), *gp = gates.data_ptr<T>(), *w1t = w1z_t.data_ptr<T>(), *w2t = w2_t.data_ptr<T>();
  T *da = d_a.data_ptr<T>(), *ds = d_step.data_ptr<T>(), *dc = d_c.data_ptr<T>();
  auto dz0 = torch::zeros({b, d}, into_z.options());
  T* dz_next = dz0.data_ptr<T>();
  int64_t k = gates.size(0);
  for (int t = n_tok - 1; t >= 0; --t) {
    const int64_t first = k - counts[t];
    T* top = ds + (k - 1) * bd;                                                  // d loss / d z*_t
    const T* from_outside = inj + static_cast<int64_t>(t) * bd;
    for (int j = 0; j < bd; ++j) top[j] = from_outside[j] + dz_next[j];
    for (int64_t it = k - 1; it >= first; --it) {
      T* dai = da + it * bh;
      const T* g = gp + it * bh;
      mm<T>(ds + it * bd, w2t, b, d, hidden, T(0), dai);                  // dz_{i+1} W2^T
      for (int j = 0; j < bh; ++j) dai[j] *= T(1) - g[j] * g[j];                 // * tanh'(a_i) = 1 - g_i^2
      T* dct = dc + static_cast<int64_t>(t) * bh;                                // d c_t = sum_i da_i
      if (it == k - 1) {
        std::memcpy(dct, dai, sizeof(T) * bh);
      } else {
        for (int j = 0; j < bh; ++j) dct[j] += dai[j];
      }
      T* below = it > first ? ds + (it - 1) * bd : dz_next;                      // z_0 of token t = z*_{t-1}
      std::memcpy(below, ds + it * bd, sizeof(T) * bd);
      mm<T>(dai, w1t, b, hidden, d, static_cast<T>(keep), below);         // dz_i = keep dz_{i+1} + da_i W1z^T
    }
    k = first;
  }
  return dz0;
}


template <typename T>
void liquid_forward_impl(torch::Tensor& liquid_in, torch::Tensor& hs, const torch::Tensor& lh, torch::Tensor& tanh_pre,
                         torch::Tensor& tau, torch::Tensor& h_raw, double tau_offset) {
  const int n_tok = liquid_in.size(0), b = liquid_in.size(1), d = hs.size(2);
  const int bd = b * d;
  T *in = liquid_in.data_ptr<T>(), *hp = hs.data_ptr<T>(), *thp = tanh_pre.data_ptr<T>(), *taup = tau.data_ptr<T>();
  T* rawp = h_raw.data_ptr<T>();
  const T* w = lh.data_ptr<T>();
  const T offset = static_cast<T>(tau_offset);
  std::vector<T> e(bd), one_plus(bd), ln_w(bd);
  for (int t = 0; t < n_tok; ++t) {
    T* x = in + static_cast<int64_t>(t) * 2 * bd;                 // [pre; tau_arg] per row, z-part and bias in
    const T* h = hp + static_cast<int64_t>(t) * bd;
    T *th = thp + static_cast<int64_t>(t) * bd, *ta = taup + static_cast<int64_t>(t) * bd;
    T *raw = rawp + static_cast<int64_t>(t) * bd, *h_next = hp + static_cast<int64_t>(t + 1) * bd;
    mm<T>(h, w, b, d, 2 * d, T(1), x);                      // + h_{t-1} [W_rec; W_tau_h]^T
    for (int r = 0; r < b; ++r) {
      std::memcpy(th + r * d, x + r * 2 * d, sizeof(T) * d);
      std::memcpy(ta + r * d, x + r * 2 * d + d, sizeof(T) * d);
    }
    tanh_inplace(th, bd);                                          // tanh(pre)
    for (int j = 0; j < bd; ++j) e[j] = std::min(std::max(ta[j], T(-80)), T(20));   // above 20 softplus is x; below
                                                                    // -80 it is < 2e-35, lost in tau_min: keeps MKL
                                                                    // off its slow overflow / underflow path
    exp_of(e.data(), e.data(), bd);
    for (int j = 0; j < bd; ++j) one_plus[j] = T(1) + e[j];
    ln_of(one_plus.data(), ln_w.data(), bd);                               // log1p(e) = ln(1 + e) e / ((1 + e) - 1), exact
    for (int j = 0; j < bd; ++j) {                                  // to a few ulp (MKL's vsLog1p is not exported)
      const T log1p_e = one_plus[j] == T(1) ? e[j] : ln_w[j] * (e[j] / (one_plus[j] - T(1)));
      const T softplus = ta[j] > T(20) ? ta[j] : log1p_e;           // softplus, torch's threshold 20
      ta[j] = softplus + offset;                                   // tau = softplus(tau_arg) + tau_min
      raw[j] = h[j] + (th[j] - h[j] / ta[j]);                      // h + dt (-h / tau + tanh(pre)), dt = 1
      T v = raw[j];
      if (std::isnan(v)) v = 0;
      v = std::min(std::max(v, T(-1e3)), T(1e3));                  // nan_to_num, then clamp to +-1e3
      h_next[j] = v;
    }
  }
}

template <typename T>
torch::Tensor liquid_backward_impl(const torch::Tensor& d_hs, const torch::Tensor& pre_grad,
                                   const torch::Tensor& arg_grad, const torch::Tensor& h_grad, const torch::Tensor& lh_t,
                                   torch::Tensor& d_liq) {
  const int n_tok = d_hs.size(0), b = d_hs.size(1), d = d_hs.size(2);
  const int bd = b * d;
  const T *dhs = d_hs.data_ptr<T>(), *pg = pre_grad.data_ptr<T>(), *ag = arg_grad.data_ptr<T>();
  const T *hg = h_grad.data_ptr<T>(), *w = lh_t.data_ptr<T>();
  T* dl = d_liq.data_ptr<T>();
  auto dh0 = torch::zeros({b, d}, d_hs.options());
  T* dh_next = dh0.data_ptr<T>();
  std::vector<T> dh(bd);
  for (int t = n_tok - 1; t >= 0; --t) {
    const int64_t o = static_cast<int64_t>(t) * bd;
    T* dlt = dl + 2 * o;
    for (int r = 0; r < b; ++r) {
      for (int j = 0; j < d; ++j) {
        const int i = r * d + j;
        dh[i] = dhs[o + i] + dh_next[i];                            // d loss / d h_t
        dlt[r * 2 * d + j] = dh[i] * pg[o + i];                     // d / d pre
        dlt[r * 2 * d + d + j] = dh[i] * ag[o + i];                 // d / d tau_arg
        dh_next[i] = dh[i] * hg[o + i];                             // d h_t / d h_{t-1}, direct part
      }
    }
    mm<T>(dlt, w, b, 2 * d, d, T(1), dh_next);              // + d[pre; tau_arg] [W_rec; W_tau_h]
  }
  return dh0;
}

void check(const std::vector<torch::Tensor>& tensors) {
  for (const auto& x : tensors) {
    TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "picard: CPU, contiguous tensors only");
    TORCH_CHECK(x.scalar_type() == tensors[0].scalar_type(), "picard: one dtype for every tensor");
  }
}

}  // namespace

// Entry points: float32 or float64, dispatched by torch's AT_DISPATCH_FLOATING_TYPES (which names a wrong dtype).
std::tuple<std::vector<int64_t>, double> deq_forward(torch::Tensor c, torch::Tensor iterates, torch::Tensor gates,
                                                     torch::Tensor zs, torch::Tensor w1z, torch::Tensor w2,
                                                     torch::Tensor b2, double keep, int64_t max_iter, double tol,
                                                     bool store) {
  check({c, iterates, gates, zs, w1z, w2, b2});
  return AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "deq_forward", [&] {
    return forward_impl<scalar_t>(c, iterates, gates, zs, w1z, w2, b2, keep, max_iter, tol, store);
  });
}

torch::Tensor deq_backward(torch::Tensor into_z, torch::Tensor gates, std::vector<int64_t> counts, torch::Tensor w1z_t,
                           torch::Tensor w2_t, double keep, torch::Tensor d_a, torch::Tensor d_step, torch::Tensor d_c) {
  check({into_z, gates, w1z_t, w2_t, d_a, d_step, d_c});
  return AT_DISPATCH_FLOATING_TYPES(into_z.scalar_type(), "deq_backward", [&] {
    return backward_impl<scalar_t>(into_z, gates, counts, w1z_t, w2_t, keep, d_a, d_step, d_c);
  });
}

void liquid_forward(torch::Tensor liquid_in, torch::Tensor hs, torch::Tensor lh, torch::Tensor tanh_pre,
                    torch::Tensor tau, torch::Tensor h_raw, double tau_offset) {
  check({liquid_in, hs, lh, tanh_pre, tau, h_raw});
  AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "liquid_forward", [&] {
    liquid_forward_impl<scalar_t>(liquid_in, hs, lh, tanh_pre, tau, h_raw, tau_offset);
  });
}

torch::Tensor liquid_backward(torch::Tensor d_hs, torch::Tensor pre_grad, torch::Tensor arg_grad, torch::Tensor h_grad,
                              torch::Tensor lh_t, torch::Tensor d_liq) {
  check({d_hs, pre_grad, arg_grad, h_grad, lh_t, d_liq});
  return AT_DISPATCH_FLOATING_TYPES(d_hs.scalar_type(), "liquid_backward", [&] {
    return liquid_backward_impl<scalar_t>(d_hs, pre_grad, arg_grad, h_grad, lh_t, d_liq);
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("liquid_forward", &liquid_forward, "the liquid cell over every token, given z*_t's part of its input");
  m.def("liquid_backward", &liquid_backward, "BPTT through the liquid cell: d loss / d h_0");
  m.def("deq_forward", &deq_forward, "Picard iterations of every token: (iterations per token, last max-abs step)");
  m.def("deq_backward", &deq_backward, "BPTT through every Picard iteration: d loss / d z_0");
}
