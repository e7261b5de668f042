// ThreadPool: between parallel_for calls workers (optionally) spin, then sleep on a condition
// variable; the caller likewise spins, then sleeps, while waiting for the last worker.
#include "threadpool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace npu {

static inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spins until pred() holds or spin_ns pass; returns pred().
template <typename Pred>
static bool spin_until(int64_t spin_ns, Pred pred) {
  if (spin_ns <= 0) return pred();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0;; i++) {
    if (pred()) return true;
    cpu_relax();
    if ((i & 63) == 63 && std::chrono::steady_clock::now() - t0 > std::chrono::nanoseconds(spin_ns)) return pred();
  }
}

// NPUSERVE_SPIN_US=50 bridges the gap between two matmuls of one step and was ~25% faster at
// batch-1 decode on a quiet 2-core machine, but ~30% slower when other processes kept the cores
// busy (a spinning thread holds the core the thread it waits for needs), so the default is off.
static int64_t spin_nanos() {
  const char* env = std::getenv("NPUSERVE_SPIN_US");
  return env && *env ? std::max(0L, std::atol(env)) * 1000 : 0;
}

ThreadPool::ThreadPool(int threads) : spin_ns_(spin_nanos()) {
  for (int i = 1; i < threads; i++) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
    generation_.fetch_add(1);
  }
  start_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_tasks(int thread_index) {
  for (int task = next_.fetch_add(1); task < tasks_; task = next_.fetch_add(1)) (*fn_)(task, thread_index);
}

void ThreadPool::worker_loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    if (!spin_until(spin_ns_, [&] { return generation_.load(std::memory_order_acquire) != seen; })) {
      std::unique_lock<std::mutex> lock(mu_);
      sleepers_++;
      start_cv_.wait(lock, [&] { return generation_.load() != seen; });
      sleepers_--;
    }
    if (stop_.load()) return;
    seen = generation_.load(std::memory_order_acquire);
    run_tasks(index);
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // The caller may be asleep on done_cv_: taking the lock orders this with its predicate check.
      { std::lock_guard<std::mutex> lock(mu_); }
      done_cv_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int tasks, const std::function<void(int, int)>& fn) {
  if (tasks <= 0) return;
  if (workers_.empty() || tasks == 1) {
    for (int t = 0; t < tasks; t++) fn(t, 0);
    return;
  }
  fn_ = &fn;
  tasks_ = tasks;
  next_.store(0);
  active_.store((int)workers_.size());
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
    wake = sleepers_ > 0;
  }
  if (wake) start_cv_.notify_all();
  run_tasks(0);
  if (spin_until(spin_ns_, [&] { return active_.load(std::memory_order_acquire) == 0; })) return;
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return active_.load() == 0; });
}

}  // namespace npu
