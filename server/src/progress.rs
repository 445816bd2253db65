//! What the running job is doing, for `/sdapi/v1/progress` (polled) and the Server-Sent Events
//! stream (pushed): step counts, timing and the latest cheap preview.

use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::sync::broadcast;

#[derive(Default, Clone)]
pub struct Snapshot {
    pub job: Option<u64>,
    pub job_timestamp: String,
    pub job_no: u64,
    pub step: usize,
    pub total: usize,
    pub started: Option<Instant>,
    pub skipped: bool,
    pub interrupted: bool,
    /// Base64 PNG.
    pub preview: Option<String>,
    pub textinfo: Option<String>,
}

pub struct ProgressHub {
    state: Mutex<Snapshot>,
    events: broadcast::Sender<Value>,
}

impl Default for ProgressHub {
    fn default() -> Self {
        ProgressHub {
            state: Mutex::default(),
            events: broadcast::channel(64).0,
        }
    }
}

impl ProgressHub {
    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Value> {
        self.events.subscribe()
    }

    /// Sends an SSE event `{"event": kind, ...data}` to every listener (none listening is fine).
    fn emit(&self, kind: &str, mut data: Value) {
        if let Some(obj) = data.as_object_mut() {
            obj.insert("event".into(), kind.into());
        }
        let _ = self.events.send(data);
    }

    pub fn start(&self, job: u64, timestamp: &str) {
        {
            let mut s = self.lock();
            let job_no = s.job_no + 1;
            *s = Snapshot {
                job: Some(job),
                job_timestamp: timestamp.to_string(),
                job_no,
                started: Some(Instant::now()),
                textinfo: Some("loading model".into()),
                ..Snapshot::default()
            };
        }
        self.emit("start", json!({"job": job}));
    }

    pub fn step(&self, job: u64, step: usize, total: usize, preview: Option<String>) {
        {
            let mut s = self.lock();
            s.step = step;
            s.total = total;
            s.textinfo = Some(format!("step {step}/{total}"));
            if preview.is_some() {
                s.preview = preview.clone();
            }
        }
        let mut event = json!({"job": job, "step": step, "total": total,
                               "progress": step as f64 / total.max(1) as f64});
        if let Some(p) = preview {
            event["preview"] = p.into();
        }
        self.emit("step", event);
    }

    pub fn mark(&self, skipped: bool, interrupted: bool) {
        let mut s = self.lock();
        s.skipped |= skipped;
        s.interrupted |= interrupted;
    }

    /// The job ended: `status` is done, interrupted, cancelled or error.
    pub fn finish(&self, job: u64, status: &str) {
        {
            let mut s = self.lock();
            s.job = None;
            s.started = None;
            s.step = 0;
            s.total = 0;
            s.textinfo = None;
        }
        self.emit("end", json!({"job": job, "status": status}));
    }
}

/// A1111's `job_timestamp` format, `YYYYMMDDhhmmss`, in UTC.
pub fn timestamp_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(timestamp_now().len(), 14);
    }

    #[test]
    fn steps_reach_subscribers() {
        let hub = ProgressHub::default();
        let mut rx = hub.subscribe();
        hub.start(7, "20240101000000");
        hub.step(7, 1, 4, Some("abc".into()));
        assert_eq!(hub.snapshot().step, 1);
        assert_eq!(rx.try_recv().unwrap()["event"], "start");
        let step = rx.try_recv().unwrap();
        assert_eq!(step["preview"], "abc");
        assert_eq!(step["progress"], 0.25);
        hub.finish(7, "done");
        assert!(hub.snapshot().job.is_none());
    }
}
