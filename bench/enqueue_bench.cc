// Load generator for the build API: C client threads, each with its own
// keep-alive connection, POST builds for a fixed time; prints throughput and
// latency percentiles as one table row.
//   kiln-bench-enqueue --port P --project demo --clients 8 --seconds 5 --label sqlite
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <Poco/Net/HTTPClientSession.h>
#include <Poco/Net/HTTPRequest.h>
#include <Poco/Net/HTTPResponse.h>
#include <Poco/NullStream.h>
#include <Poco/StreamCopier.h>

namespace {

struct Args {
  int port = 8080;
  std::string project = "bench";
  int clients = 1;
  double seconds = 5;
  std::string label = "?";
  bool header = false;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (k == "--port")
      a.port = std::stoi(next());
    else if (k == "--project")
      a.project = next();
    else if (k == "--clients")
      a.clients = std::stoi(next());
    else if (k == "--seconds")
      a.seconds = std::stod(next());
    else if (k == "--label")
      a.label = next();
    else if (k == "--header")
      a.header = true;
  }
  return a;
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<long>(i), v.end());
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  if (a.header) {
    std::printf("| store    | clients | requests | errors | req/s   | p50 ms | p99 ms |\n");
    std::printf("|----------|---------|----------|--------|---------|--------|--------|\n");
    return 0;
  }
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(static_cast<int64_t>(a.seconds * 1000));
  std::vector<std::vector<double>> latencies(static_cast<size_t>(a.clients));
  std::atomic<long> errors{0};
  std::vector<std::thread> threads;
  const auto t0 = std::chrono::steady_clock::now();
  for (int c = 0; c < a.clients; ++c) {
    threads.emplace_back([&, c] {
      Poco::Net::HTTPClientSession session("127.0.0.1", static_cast<Poco::UInt16>(a.port));
      session.setKeepAlive(true);
      session.setTimeout(Poco::Timespan(30, 0));
      const std::string path = "/projects/" + a.project + "/builds";
      long n = 0;
      while (std::chrono::steady_clock::now() < deadline) {
        const std::string body =
            R"({"prompt": "bench build )" + std::to_string(c) + "-" + std::to_string(n++) + R"("})";
        const auto s = std::chrono::steady_clock::now();
        try {
          Poco::Net::HTTPRequest req("POST", path, Poco::Net::HTTPMessage::HTTP_1_1);
          req.setContentType("application/json");
          req.setContentLength(static_cast<std::streamsize>(body.size()));
          req.setKeepAlive(true);
          session.sendRequest(req) << body;
          Poco::Net::HTTPResponse res;
          std::istream& in = session.receiveResponse(res);
          Poco::NullOutputStream sink;
          Poco::StreamCopier::copyStream(in, sink);
          if (res.getStatus() != 202) ++errors;
        } catch (const std::exception&) {
          ++errors;
          session.reset();
        }
        latencies[static_cast<size_t>(c)].push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s)
                .count());
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> all;
  for (auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  const double total = static_cast<double>(all.size());
  std::vector<double> copy = all;
  std::printf("| %-8s | %7d | %8zu | %6ld | %7.0f | %6.2f | %6.2f |\n", a.label.c_str(), a.clients,
              all.size(), errors.load(), total / elapsed, percentile(copy, 0.50),
              percentile(copy, 0.99));
  return errors.load() == 0 ? 0 : 1;
}
