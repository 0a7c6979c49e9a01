// The DEQ's Picard chain on the CPU, forward and backward, as plain loops around BLAS calls (trainables/emma/picard.py).
//
// Per Picard iteration the eager loop makes ~6 ATen calls on 16 x 256 tensors; each costs 2-6 us of dispatch,
// allocation and bookkeeping against ~8 us for the matmul itself. Here an iteration is two gemm calls (MKL's,
// which torch's CPU build exports: the same kernels `torch.addmm` reaches), one vector tanh (MKL VML) and one
// fused elementwise pass. Row-major tensors throughout; `mm` maps them onto column-major BLAS.
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
}

namespace {

void gemm(char ta, int m, int n, int k, const float* a, int lda, const float* b, int ldb, float beta, float* c,
          int ldc) {
  const float one = 1.f;
  const char nt = 'N';
  sgemm_(&ta, &nt, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
}

void gemm(char ta, int m, int n, int k, const double* a, int lda, const double* b, int ldb, double beta, double* c,
          int ldc) {
  const double one = 1.;
  const char nt = 'N';
  dgemm_(&ta, &nt, &m, &n, &k, &one, a, &lda, b, &ldb, &beta, c, &ldc);
}

void tanh_inplace(float* x, int n) { vsTanh(n, x, x); }
void tanh_inplace(double* x, int n) { vdTanh(n, x, x); }

// c (rows x n) = beta c + a (rows x k) w, with w (k x n) row-major, or w^T when w_transposed (w stored n x k).
// Column-major view: c^T = op(w)^T a^T, i.e. gemm(op, m = n, n = rows, k).
template <typename T>
void mm(const T* a, const T* w, bool w_transposed, int rows, int k, int n, T beta, T* c) {
  if (w_transposed) {
    gemm('T', n, rows, k, w, k, a, k, beta, c, n);
  } else {
    gemm('N', n, rows, k, w, n, a, k, beta, c, n);
  }
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
      mm<T>(z, w1, false, b, d, hidden, T(1), g);
      tanh_inplace(g, bh);                                                       // g_i = tanh(a_i)
      for (int r = 0; r < b; ++r) std::memcpy(step.data() + r * d, bias, sizeof(T) * d);
      mm<T>(g, w2p, false, b, hidden, d, T(1), step.data());                     // g_i W2 + b2
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
                            const torch::Tensor& w1z, const torch::Tensor& w2, double keep, torch::Tensor& d_a,
                            torch::Tensor& d_step) {
  const int n_tok = into_z.size(0), b = into_z.size(1), d = into_z.size(2), hidden = gates.size(2);
  const int bd = b * d, bh = b * hidden;
  const T *inj = into_z.data_ptr<T>(), *gp = gates.data_ptr<T>(), *w1 = w1z.data_ptr<T>(), *w2p = w2.data_ptr<T>();
  T *da = d_a.data_ptr<T>(), *ds = d_step.data_ptr<T>();
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
      mm<T>(ds + it * bd, w2p, true, b, d, hidden, T(0), dai);                   // dz_{i+1} W2^T
      for (int j = 0; j < bh; ++j) dai[j] *= T(1) - g[j] * g[j];                 // * tanh'(a_i) = 1 - g_i^2
      T* below = it > first ? ds + (it - 1) * bd : dz_next;                      // z_0 of token t = z*_{t-1}
      std::memcpy(below, ds + it * bd, sizeof(T) * bd);
      mm<T>(dai, w1, true, b, hidden, d, static_cast<T>(keep), below);           // dz_i = keep dz_{i+1} + da_i W1z^T
    }
    k = first;
  }
  return dz0;
}

void check(const std::vector<torch::Tensor>& tensors) {
  for (const auto& x : tensors) {
    TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "picard: CPU, contiguous tensors only");
    TORCH_CHECK(x.scalar_type() == tensors[0].scalar_type(), "picard: one dtype for every tensor");
  }
}

}  // namespace

std::tuple<std::vector<int64_t>, double> deq_forward(torch::Tensor c, torch::Tensor iterates, torch::Tensor gates,
                                                     torch::Tensor zs, torch::Tensor w1z, torch::Tensor w2,
                                                     torch::Tensor b2, double keep, int64_t max_iter, double tol,
                                                     bool store) {
  check({c, iterates, gates, zs, w1z, w2, b2});
  if (c.scalar_type() == torch::kDouble) {
    return forward_impl<double>(c, iterates, gates, zs, w1z, w2, b2, keep, max_iter, tol, store);
  }
  TORCH_CHECK(c.scalar_type() == torch::kFloat, "picard: float32 or float64");
  return forward_impl<float>(c, iterates, gates, zs, w1z, w2, b2, keep, max_iter, tol, store);
}

torch::Tensor deq_backward(torch::Tensor into_z, torch::Tensor gates, std::vector<int64_t> counts, torch::Tensor w1z,
                           torch::Tensor w2, double keep, torch::Tensor d_a, torch::Tensor d_step) {
  check({into_z, gates, w1z, w2, d_a, d_step});
  if (into_z.scalar_type() == torch::kDouble) {
    return backward_impl<double>(into_z, gates, counts, w1z, w2, keep, d_a, d_step);
  }
  TORCH_CHECK(into_z.scalar_type() == torch::kFloat, "picard: float32 or float64");
  return backward_impl<float>(into_z, gates, counts, w1z, w2, keep, d_a, d_step);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("deq_forward", &deq_forward, "Picard iterations of every token: (iterations per token, last max-abs step)");
  m.def("deq_backward", &deq_backward, "BPTT through every Picard iteration: d loss / d z_0");
}
