// Reading ahead on a background thread: item m = first, first + 1, ... is produce(m), computed in
// order on one thread, up to `depth` items ahead of the consumer; next() returns them in order.
// An exception on the reader thread is rethrown by next() (once the items before it are taken).
// Because produce is a function of m alone, where a run starts (a resumed run's first item) does
// not change what it reads.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace ctsr::train {

template <class Item>
class OrderedPrefetcher {
 public:
  using Produce = std::function<Item(int64_t m)>;
  OrderedPrefetcher(Produce produce, int64_t first, int64_t depth)
      : produce_(std::move(produce)), next_to_read_(first), depth_(size_t(std::max<int64_t>(1, depth))) {
    thread_ = std::thread([this] { run(); });
  }
  ~OrderedPrefetcher() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_all();
    thread_.join();
  }
  OrderedPrefetcher(const OrderedPrefetcher&) = delete;
  OrderedPrefetcher& operator=(const OrderedPrefetcher&) = delete;

  Item next() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !ready_.empty() || error_; });
    if (ready_.empty()) std::rethrow_exception(error_);
    Item item = std::move(ready_.front());
    ready_.pop_front();
    lock.unlock();
    changed_.notify_all();
    return item;
  }

 private:
  void run() {
    try {
      for (;;) {
        int64_t m;
        {
          std::unique_lock<std::mutex> lock(mutex_);
          changed_.wait(lock, [&] { return stopping_ || ready_.size() < depth_; });
          if (stopping_) return;
          m = next_to_read_++;
        }
        Item item = produce_(m);
        {
          std::lock_guard<std::mutex> lock(mutex_);
          ready_.push_back(std::move(item));
        }
        changed_.notify_all();
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
      changed_.notify_all();
    }
  }

  Produce produce_;
  int64_t next_to_read_;
  size_t depth_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Item> ready_;
  std::exception_ptr error_;
  bool stopping_ = false;
  std::thread thread_;  // last: started once everything above exists
};

}  // namespace ctsr::train
