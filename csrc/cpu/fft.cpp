// Plans of the channel-vectorised FFT (csrc/cpu/fft.h): the radices of each
// length, their twiddles and DFT matrices, made once per length and cached.

#include "fft.h"

#include <cmath>
#include <map>
#include <mutex>

namespace lama_fast {
namespace fft {
namespace {

std::vector<int64_t> factorize(int64_t n) {
  std::vector<int64_t> factors;
  int64_t twos = 0;
  while (n % 2 == 0) {
    ++twos;
    n /= 2;
  }
  // Powers of two as radix 8 (fewest passes over the data), then one 4 or 2.
  for (; twos >= 3; twos -= 3) factors.push_back(8);
  if (twos > 0) factors.push_back(int64_t(1) << twos);
  for (int64_t p = 3; p * p <= n; p += 2) {
    while (n % p == 0) {
      factors.push_back(p);
      n /= p;
    }
  }
  if (n > 1) factors.push_back(n);
  return factors;
}

// cos and sin of -2 pi e / len, appended to re and im.
template <typename T>
void push_root(std::vector<T>& re, std::vector<T>& im, int64_t e, int64_t len) {
  const double angle = -2.0 * M_PI * static_cast<double>(e) / static_cast<double>(len);
  re.push_back(static_cast<T>(std::cos(angle)));
  im.push_back(static_cast<T>(std::sin(angle)));
}

template <typename T>
std::shared_ptr<const ComplexPlan<T>> build_complex_plan(int64_t n) {
  auto plan = std::make_shared<ComplexPlan<T>>();
  plan->n = n;
  int64_t len = n;
  int64_t s = 1;
  for (int64_t r : factorize(n)) {
    StageInfo st{r, len / r, s, static_cast<int64_t>(plan->twr.size()), -1};
    for (int64_t p = 0; p < st.m; ++p) {
      for (int64_t k = 1; k < r; ++k) push_root(plan->twr, plan->twi, (p * k) % len, len);
    }
    if (r != 2 && r != 3 && r != 4 && r != 8) {
      st.dft = static_cast<int64_t>(plan->dftr.size());
      for (int64_t e = 0; e < r; ++e) push_root(plan->dftr, plan->dfti, e, r);
    }
    plan->stages.push_back(st);
    len /= r;
    s *= r;
  }
  return plan;
}

template <typename T>
std::shared_ptr<const RealPlan<T>> build_real_plan(int64_t n) {
  auto plan = std::make_shared<RealPlan<T>>();
  plan->n = n;
  plan->even = n % 2 == 0;
  plan->complex = complex_plan<T>(plan->even ? n / 2 : n);
  if (plan->even) {
    for (int64_t k = 0; k <= n / 2; ++k) push_root(plan->wr, plan->wi, k, n);
  }
  return plan;
}

// The plan of length n from a cache per plan type, built outside the lock.
template <typename Plan>
std::shared_ptr<const Plan> cached(int64_t n, std::shared_ptr<const Plan> (*build)(int64_t)) {
  static std::mutex mutex;
  static auto* cache = new std::map<int64_t, std::shared_ptr<const Plan>>();
  {
    std::lock_guard<std::mutex> guard(mutex);
    auto it = cache->find(n);
    if (it != cache->end()) return it->second;
  }
  auto plan = build(n);
  std::lock_guard<std::mutex> guard(mutex);
  return cache->emplace(n, plan).first->second;
}

}  // namespace

bool fft_friendly(int64_t n) {
  for (int64_t f : factorize(n)) {
    if (f > kMaxRadix) return false;
  }
  return true;
}

template <typename T>
std::shared_ptr<const ComplexPlan<T>> complex_plan(int64_t n) {
  return cached<ComplexPlan<T>>(n, &build_complex_plan<T>);
}

template <typename T>
std::shared_ptr<const RealPlan<T>> real_plan(int64_t n) {
  return cached<RealPlan<T>>(n, &build_real_plan<T>);
}

template std::shared_ptr<const ComplexPlan<float>> complex_plan<float>(int64_t);
template std::shared_ptr<const ComplexPlan<double>> complex_plan<double>(int64_t);
template std::shared_ptr<const RealPlan<float>> real_plan<float>(int64_t);
template std::shared_ptr<const RealPlan<double>> real_plan<double>(int64_t);

}  // namespace fft
}  // namespace lama_fast
