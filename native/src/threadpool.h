// A fixed pool of worker threads created once per engine; the calling thread joins in, so a pool of
// N threads uses N cores. parallel_for hands out task indices from an atomic counter.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace npu {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return (int)workers_.size() + 1; }
  // Runs fn(task, thread_index) for task in [0, tasks); returns when all are done.
  void parallel_for(int tasks, const std::function<void(int, int)>& fn);

 private:
  void worker_loop(int index);
  void run_tasks(int thread_index);

  const int64_t spin_ns_;
  std::vector<std::thread> workers_;
  // One step issues dozens of parallel_for calls back to back: waiting threads spin briefly on these
  // atomics before sleeping on the condition variables, so a call rarely pays a futex wakeup.
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int, int)>* fn_ = nullptr;
  int tasks_ = 0;
  std::atomic<int> next_{0};
  std::atomic<int> active_{0};
  std::atomic<uint64_t> generation_{0};
  std::atomic<bool> stop_{false};
  int sleepers_ = 0;  // workers waiting on start_cv_ (guarded by mu_)
};

}  // namespace npu
