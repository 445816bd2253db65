//! The job queue: a bounded FIFO of waiting jobs in front of the running ones (one image job, or
//! as many chat jobs as the LLM has slots). Requests wait on a one-shot reply (images) or a
//! channel of events (chat); a request that goes away cancels its job (removed if still waiting,
//! stopped at the next step if running).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use std::path::PathBuf;

use kiln_models::image::RgbImage;
use kiln_models::pipeline::{GenerationParams, StepControl};
use kiln_models::upscale::extras::ExtrasResize;
use tokio::sync::oneshot;

use crate::catalog::ModelEntry;
use crate::chat_job::ChatJob;
use crate::error::ApiResult;

const RUN: u8 = 0;
const SKIP: u8 = 1;
const INTERRUPT: u8 = 2;
const CANCEL: u8 = 3;

/// What the API asks of a running job, read by the worker after each step.
#[derive(Default, Debug)]
pub struct JobControl(AtomicU8);

impl JobControl {
    pub fn skip(&self) {
        // Never downgrade an interrupt or cancel to a skip.
        let _ = self
            .0
            .compare_exchange(RUN, SKIP, Ordering::SeqCst, Ordering::SeqCst);
    }

    pub fn interrupt(&self) {
        self.0.fetch_max(INTERRUPT, Ordering::SeqCst);
    }

    pub fn cancel(&self) {
        self.0.store(CANCEL, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst) == CANCEL
    }

    pub fn is_interrupted(&self) -> bool {
        self.0.load(Ordering::SeqCst) >= INTERRUPT
    }

    /// The pipeline's next move; a skip applies to one batch only, as in A1111.
    pub fn next_step(&self) -> StepControl {
        match self
            .0
            .compare_exchange(SKIP, RUN, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => StepControl::Skip,
            Err(RUN) => StepControl::Continue,
            Err(_) => StepControl::Interrupt,
        }
    }
}

/// One generation request, checked and ready to run.
pub struct JobRequest {
    pub params: GenerationParams,
    pub model: ModelEntry,
    /// A1111's refiner: the listed model that samples the steps after the switch, and the switch.
    pub refiner: Option<(ModelEntry, f64)>,
    /// ControlNet units, loaded by the worker into `params.controls`.
    pub controls: Vec<crate::controlnets::ControlRequest>,
}

/// One finished image.
pub struct OutputImage {
    pub seed: u64,
    /// PNG with the A1111 `parameters` chunk.
    pub png: Vec<u8>,
    pub infotext: String,
}

pub struct JobOutput {
    pub images: Vec<OutputImage>,
    pub model_name: String,
    /// The model's short (10 hex digit) hash.
    pub model_hash: Option<String>,
    /// A1111's `job_timestamp`, `YYYYMMDDhhmmss` (UTC).
    pub job_timestamp: String,
    pub interrupted: bool,
}

pub type Reply = oneshot::Sender<ApiResult<JobOutput>>;

/// An upscaler a request names: built in (by its A1111 name: the queue holds no model types, so
/// its `Send` stays shallow), or a file of `--upscaler-dir` the worker loads.
#[derive(Clone, Debug)]
pub enum UpscalerChoice {
    Builtin(&'static str),
    File { name: String, path: PathBuf },
}

impl UpscalerChoice {
    pub fn name(&self) -> &str {
        match self {
            UpscalerChoice::Builtin(name) => name,
            UpscalerChoice::File { name, .. } => name,
        }
    }
}

/// One Extras upscale (POST /sdapi/v1/extra-single-image), checked and decoded.
pub struct UpscaleJob {
    pub image: RgbImage,
    pub resize: ExtrasResize,
    /// `None` for A1111's "None": the image comes back as it was.
    pub first: Option<UpscalerChoice>,
    pub second: Option<(UpscalerChoice, f32)>,
}

pub struct UpscaleOutput {
    pub png: Vec<u8>,
    /// A1111's `Postprocess ...` infotext.
    pub infotext: String,
}

/// What a job is: an image generation answered once, an Extras upscale answered once, or a chat
/// completion answered as a stream of events.
pub enum Work {
    /// Boxed: a request (its generation parameters) is several times a chat job's size.
    Image {
        request: Box<JobRequest>,
        reply: Reply,
    },
    Chat(ChatJob),
    Upscale {
        job: Box<UpscaleJob>,
        reply: oneshot::Sender<ApiResult<UpscaleOutput>>,
    },
}

pub struct Job {
    pub id: u64,
    pub work: Work,
    pub control: Arc<JobControl>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

#[derive(Default)]
struct State {
    waiting: VecDeque<Job>,
    running: Vec<(u64, Arc<JobControl>)>,
    closed: bool,
    next_id: u64,
}

pub struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
}

impl Queue {
    pub fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a job; `QueueFull` when `capacity` jobs already wait.
    pub fn submit(&self, work: Work) -> Result<u64, QueueFull> {
        let mut s = self.lock();
        if s.waiting.len() >= self.capacity || s.closed {
            return Err(QueueFull);
        }
        s.next_id += 1;
        let id = s.next_id;
        s.waiting.push_back(Job {
            id,
            work,
            control: Arc::default(),
        });
        drop(s);
        self.ready.notify_one();
        Ok(id)
    }

    /// Drops a waiting job, or cancels the running one.
    pub fn cancel(&self, id: u64) {
        let mut s = self.lock();
        s.waiting.retain(|j| j.id != id);
        for (running, control) in &s.running {
            if *running == id {
                control.cancel();
            }
        }
    }

    /// The first running job's control, if a job runs (A1111's interrupt and skip act on it).
    pub fn running(&self) -> Option<(u64, Arc<JobControl>)> {
        self.lock().running.first().cloned()
    }

    /// Jobs running now.
    pub fn running_count(&self) -> usize {
        self.lock().running.len()
    }

    /// Jobs waiting (not counting the running one).
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Blocks until a job is queued (it becomes the running one) or the queue is closed.
    pub fn pop(&self) -> Option<Job> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if let Some(job) = s.waiting.pop_front() {
                s.running.push((job.id, job.control.clone()));
                return Some(job);
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The first waiting job if `accept` takes it (it becomes running), without waiting. Only the
    /// first is considered, so a job never overtakes the one in front of it.
    pub fn pop_front_if(&self, accept: impl FnOnce(&Job) -> bool) -> Option<Job> {
        let mut s = self.lock();
        if s.closed || !s.waiting.front().is_some_and(accept) {
            return None;
        }
        let job = s.waiting.pop_front()?;
        s.running.push((job.id, job.control.clone()));
        Some(job)
    }

    /// A running job is done.
    pub fn finish(&self, id: u64) {
        self.lock().running.retain(|(r, _)| *r != id);
    }

    /// Refuses new jobs, answers waiting ones with nothing (their requests see a closed reply),
    /// stops the running one and wakes the worker so it exits.
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.waiting.clear();
        for (_, control) in &s.running {
            control.cancel();
        }
        drop(s);
        self.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_models::pipeline::GenerationParams;

    fn request(reply: Reply) -> Work {
        Work::Image {
            request: Box::new(JobRequest {
                params: GenerationParams::new("p"),
                controls: Vec::new(),
                model: ModelEntry {
                    name: "m".into(),
                    model_name: "m".into(),
                    path: "m".into(),
                    kind: crate::catalog::ModelKind::Image,
                },
                refiner: None,
            }),
            reply,
        }
    }

    #[test]
    fn bounded_fifo_with_cancellation() {
        let q = Queue::new(2);
        let (tx1, _rx1) = oneshot::channel();
        let (tx2, _rx2) = oneshot::channel();
        let (tx3, _rx3) = oneshot::channel();
        let a = q.submit(request(tx1)).unwrap();
        let b = q.submit(request(tx2)).unwrap();
        assert_eq!(q.submit(request(tx3)), Err(QueueFull));
        q.cancel(a);
        assert_eq!(q.waiting(), 1);
        let job = q.pop().unwrap();
        assert_eq!(job.id, b);
        assert_eq!(q.running().unwrap().0, b);
        q.cancel(b);
        assert!(job.control.is_cancelled());
        assert_eq!(job.control.next_step(), StepControl::Interrupt);
        q.finish(b);
        assert!(q.running().is_none());
        // Only the front job is offered to pop_front_if.
        let (tx4, _rx4) = oneshot::channel();
        let (tx5, _rx5) = oneshot::channel();
        let c = q.submit(request(tx4)).unwrap();
        q.submit(request(tx5)).unwrap();
        assert!(q.pop_front_if(|j| j.id != c).is_none());
        assert_eq!(q.pop_front_if(|j| j.id == c).unwrap().id, c);
        assert_eq!((q.running_count(), q.waiting()), (1, 1));
        q.close();
        assert!(q.pop().is_none());
    }

    #[test]
    fn skip_applies_once_and_never_overrides_interrupt() {
        let c = JobControl::default();
        assert_eq!(c.next_step(), StepControl::Continue);
        c.skip();
        assert_eq!(c.next_step(), StepControl::Skip);
        assert_eq!(c.next_step(), StepControl::Continue);
        c.interrupt();
        c.skip();
        assert_eq!(c.next_step(), StepControl::Interrupt);
        assert!(c.is_interrupted() && !c.is_cancelled());
    }
}
