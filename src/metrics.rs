//! Counters and latency histograms of the pipeline, rendered in the
//! Prometheus text format (`GET /metrics`). Labels are closed vocabularies
//! (tool, decision, status, backend, limit, stage, error kind), never an
//! argument or an output, so no metric can carry a secret.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// A step of the pipeline, timed on every call that reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// `Policy::evaluate`.
    Decide,
    /// Waiting for a human's answer.
    Confirm,
    /// `Plan::prepare`.
    Prepare,
    /// The sandbox or file tool.
    Execute,
    /// The output filter.
    Filter,
    /// The fsynced audit append.
    Audit,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Decide => "decide",
            Stage::Confirm => "confirm",
            Stage::Prepare => "prepare",
            Stage::Execute => "execute",
            Stage::Filter => "filter",
            Stage::Audit => "audit",
        }
    }
}

/// Upper bounds of the latency buckets, in seconds: 50 µs to 60 s.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 60.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations at or below each bound of [`BUCKETS`] (not cumulative).
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// Labels of one finished call.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct CallKey {
    tool: String,
    decision: &'static str,
    status: String,
    backend: &'static str,
}

#[derive(Debug, Default)]
struct Data {
    calls: BTreeMap<CallKey, u64>,
    limits: BTreeMap<&'static str, u64>,
    stages: BTreeMap<Stage, Histogram>,
}

/// The registry one executor writes to. Cheap to update (one short lock).
#[derive(Debug, Default)]
pub struct Metrics {
    data: Mutex<Data>,
}

/// Values read at render time from the parts that own them.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub pending_confirmations: usize,
    /// Warm sandboxes per backend.
    pub warm: Vec<(&'static str, usize)>,
}

impl Metrics {
    fn data(&self) -> std::sync::MutexGuard<'_, Data> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Times one stage.
    pub fn observe(&self, stage: Stage, took: Duration) {
        self.data()
            .stages
            .entry(stage)
            .or_default()
            .observe(took.as_secs_f64());
    }

    /// Counts a finished call: `status` is the Outcome's status, or
    /// `error:KIND` for a call that ended in an error.
    pub fn call(&self, tool: &str, decision: &'static str, status: &str, backend: &'static str) {
        let key = CallKey {
            tool: tool.to_string(),
            decision,
            status: status.to_string(),
            backend,
        };
        *self.data().calls.entry(key).or_default() += 1;
    }

    /// Counts a limit that stopped or shaped a run.
    pub fn limit_hit(&self, limit: &'static str) {
        *self.data().limits.entry(limit).or_default() += 1;
    }

    /// Calls counted so far with these labels (for tests).
    pub fn calls(&self, tool: &str, decision: &str, status: &str) -> u64 {
        self.data()
            .calls
            .iter()
            .filter(|(k, _)| k.tool == tool && k.decision == decision && k.status == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// The Prometheus text exposition of everything, plus `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let d = self.data();
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(
            w,
            "# HELP toolgate_calls_total Calls finished, by tool, decision, status and backend."
        );
        let _ = writeln!(w, "# TYPE toolgate_calls_total counter");
        for (k, n) in &d.calls {
            let _ = writeln!(
                w,
                "toolgate_calls_total{{tool=\"{}\",decision=\"{}\",status=\"{}\",backend=\"{}\"}} {n}",
                label(&k.tool),
                k.decision,
                label(&k.status),
                k.backend
            );
        }
        let _ = writeln!(
            w,
            "# HELP toolgate_limits_hit_total Runs stopped or shaped by a limit."
        );
        let _ = writeln!(w, "# TYPE toolgate_limits_hit_total counter");
        for (l, n) in &d.limits {
            let _ = writeln!(w, "toolgate_limits_hit_total{{limit=\"{l}\"}} {n}");
        }
        let _ = writeln!(
            w,
            "# HELP toolgate_pending_confirmations Confirmations waiting for an answer."
        );
        let _ = writeln!(w, "# TYPE toolgate_pending_confirmations gauge");
        let _ = writeln!(
            w,
            "toolgate_pending_confirmations {}",
            gauges.pending_confirmations
        );
        let _ = writeln!(
            w,
            "# HELP toolgate_pool_warm Warm sandboxes ready for a call, by backend."
        );
        let _ = writeln!(w, "# TYPE toolgate_pool_warm gauge");
        for (b, n) in &gauges.warm {
            let _ = writeln!(w, "toolgate_pool_warm{{backend=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            w,
            "# HELP toolgate_stage_seconds Time spent in each pipeline stage."
        );
        let _ = writeln!(w, "# TYPE toolgate_stage_seconds histogram");
        for (stage, h) in &d.stages {
            let s = stage.as_str();
            let mut cumulative = 0;
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                cumulative += n;
                let _ = writeln!(
                    w,
                    "toolgate_stage_seconds_bucket{{stage=\"{s}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                w,
                "toolgate_stage_seconds_bucket{{stage=\"{s}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(w, "toolgate_stage_seconds_sum{{stage=\"{s}\"}} {}", h.sum);
            let _ = writeln!(
                w,
                "toolgate_stage_seconds_count{{stage=\"{s}\"}} {}",
                h.count
            );
        }
        out
    }
}

/// A label value escaped for the text format (tool names and error kinds
/// are toolgate's own words, but escape anyway).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_histograms() {
        let m = Metrics::default();
        m.call("run_code", "allow", "completed", "wasm");
        m.call("run_code", "allow", "completed", "wasm");
        m.call("write_file", "deny", "denied", "none");
        m.limit_hit("timeout_cpu");
        m.observe(Stage::Decide, Duration::from_micros(20));
        m.observe(Stage::Decide, Duration::from_millis(3));
        m.observe(Stage::Execute, Duration::from_secs(120));
        let text = m.render(&Gauges {
            pending_confirmations: 2,
            warm: vec![("wasm", 4)],
        });
        for line in [
            "toolgate_calls_total{tool=\"run_code\",decision=\"allow\",status=\"completed\",backend=\"wasm\"} 2",
            "toolgate_calls_total{tool=\"write_file\",decision=\"deny\",status=\"denied\",backend=\"none\"} 1",
            "toolgate_limits_hit_total{limit=\"timeout_cpu\"} 1",
            "toolgate_pending_confirmations 2",
            "toolgate_pool_warm{backend=\"wasm\"} 4",
            "toolgate_stage_seconds_bucket{stage=\"decide\",le=\"0.00005\"} 1",
            "toolgate_stage_seconds_bucket{stage=\"decide\",le=\"0.005\"} 2",
            "toolgate_stage_seconds_bucket{stage=\"decide\",le=\"+Inf\"} 2",
            "toolgate_stage_seconds_count{stage=\"decide\"} 2",
            // Beyond the last bound: only in +Inf.
            "toolgate_stage_seconds_bucket{stage=\"execute\",le=\"60\"} 0",
            "toolgate_stage_seconds_bucket{stage=\"execute\",le=\"+Inf\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(m.calls("run_code", "allow", "completed"), 2);
    }
}
