-- wrk script of the benchmarks: every request is a SigV4-shaped EC2 query call (POST /,
-- DescribeRegions), as the AWS CLI would send it, with the access key from BENCH_AKID (the
-- placeholder an agent holds, or a "real" one for the direct path; nobody checks signatures
-- here, the upstream only refuses placeholders). At the end it prints one line
-- "BENCHJSON {...}" with the counts and the latency distribution (microseconds) for bench.py.

local akid = os.getenv("BENCH_AKID") or "AKIAPLACEHOLDERAGENT0"
local host = os.getenv("BENCH_HOST") or "ec2.us-east-1.amazonaws.com"
local region = os.getenv("BENCH_REGION") or "us-east-1"
local stamp = os.date("!%Y%m%dT%H%M%SZ")

wrk.method = "POST"
wrk.body = "Action=DescribeRegions&Version=2016-11-15"
wrk.headers["Host"] = host
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
wrk.headers["User-Agent"] = "aws-cli/1.46.3 bench"
wrk.headers["X-Amz-Date"] = stamp
wrk.headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=" .. akid .. "/" .. stamp:sub(1, 8)
  .. "/" .. region .. "/ec2/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature="
  .. string.rep("0", 64)

-- Percentiles reported for the distribution plots and the table.
local points = {}
for p = 1, 99 do points[#points + 1] = p end
for _, p in ipairs({99.5, 99.9, 99.99, 100}) do points[#points + 1] = p end

function done(summary, latency, requests)
  local pct = {}
  for _, p in ipairs(points) do
    pct[#pct + 1] = string.format("[%s,%d]", tostring(p), latency:percentile(p))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,'
      .. '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,'
      .. '"min_us":%d,"max_us":%d,"mean_us":%.1f,"percentiles":[%s]}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.min, latency.max, latency.mean, table.concat(pct, ",")))
end
