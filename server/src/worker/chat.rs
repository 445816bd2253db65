//! The worker's chat side: loads the requested LLM (the engine's slots with it), then runs
//! batched steps while replies are in progress, admitting the queue's next chat jobs for the same
//! model as slots free up. A job of another kind or model waits until the slots drain, so jobs
//! still start in queue order.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use kiln_llm::{ChatModel, Engine};
use kiln_runtime::DType;

use super::Worker;
use crate::catalog::ModelKind;
use crate::chat_job::{choice_sink, ChatEvent};
use crate::error::{ApiError, ApiResult};
use crate::llm_models::slot_context;
use crate::queue::{Job, Work};

/// The chat model in memory and its slots.
pub struct LoadedLlm {
    path: PathBuf,
    chat: ChatModel,
    engine: Engine,
}

impl Worker {
    /// Runs `first` and every chat job that can join it, until no reply is in progress.
    pub(super) fn run_chat(&mut self, first: Job) {
        let mut next = Some(first);
        loop {
            while let Some(job) = next.take() {
                self.admit(job);
                next = self.next_joining();
            }
            let Some(llm) = self.llm.as_mut() else {
                return;
            };
            if llm.engine.active() == 0 {
                return;
            }
            if let Err(e) = llm.engine.step(&llm.chat.model, &llm.chat.tokenizer) {
                eprintln!("kiln serve: a decode step failed: {e}");
            }
            next = self.next_joining();
        }
    }

    /// The queue's front job if it can join the replies in progress: a chat job for the loaded
    /// model whose choices fit the free slots.
    fn next_joining(&self) -> Option<Job> {
        let llm = self.llm.as_ref()?;
        let free = llm.engine.free_slots();
        self.queue.pop_front_if(|j| match &j.work {
            Work::Chat(c) => c.model.path == llm.path && c.choices.len() <= free,
            Work::Image { .. } | Work::Upscale { .. } => false,
        })
    }

    /// Starts every choice of `job` (its model loaded first); a job that cannot start hears
    /// `Failed` and leaves the queue.
    fn admit(&mut self, job: Job) {
        let Job { id, work, control } = job;
        let Work::Chat(chat) = work else {
            self.queue.finish(id);
            return;
        };
        if control.is_cancelled() || chat.events.is_closed() {
            self.queue.finish(id);
            return;
        }
        if let Err(e) = self.load_llm(&chat.model.path) {
            let _ = chat.events.send(ChatEvent::Failed(e));
            self.queue.finish(id);
            return;
        }
        let Some(llm) = self.llm.as_mut() else {
            self.queue.finish(id);
            return;
        };
        if chat.choices.len() > llm.engine.free_slots() {
            let _ = chat.events.send(ChatEvent::Failed(ApiError::invalid(
                "n",
                format!(
                    "n {} is more than this server's {} slots (--parallel)",
                    chat.choices.len(),
                    llm.engine.slots()
                ),
            )));
            self.queue.finish(id);
            return;
        }
        let remaining = Arc::new(AtomicUsize::new(chat.choices.len()));
        let mut requests = Vec::new();
        let mut sinks = Vec::new();
        let mut chat = chat;
        for (choice, request) in std::mem::take(&mut chat.choices).into_iter().enumerate() {
            sinks.push(choice_sink(
                id,
                choice,
                &chat,
                control.clone(),
                remaining.clone(),
                self.queue.clone(),
                self.metrics.clone(),
            ));
            requests.push(request);
        }
        for (request, sink) in requests.into_iter().zip(sinks) {
            if let Err(e) = llm
                .engine
                .start(&llm.chat.model, &llm.chat.tokenizer, request, sink)
            {
                // Checked on the HTTP side already; what is left is the server's.
                let _ = chat
                    .events
                    .send(ChatEvent::Failed(ApiError::internal(format!(
                        "cannot start the reply: {e}"
                    ))));
                control.cancel();
                self.queue.finish(id);
                return;
            }
        }
    }

    /// The chat model at `path` in memory, with its slots: the one loaded if it is that one, else
    /// a fresh load. With a memory budget, an image model in memory is freed first.
    fn load_llm(&mut self, path: &Path) -> ApiResult<()> {
        if self.llm.as_ref().is_some_and(|l| l.path == path) {
            return Ok(());
        }
        self.unload_llm();
        if self.settings.max_vram.is_some() {
            self.loaded = None;
            self.metrics.set_loaded(ModelKind::Image, None);
        }
        // --mmproj is for GGUF text models; a folder carries its own vision tower.
        let chat = match &self.llm_settings.mmproj {
            Some(mmproj) if !path.is_dir() => ChatModel::load_with_mmproj(
                path,
                &self.device,
                self.settings.weight_type,
                None,
                mmproj,
            ),
            _ => ChatModel::load(path, &self.device, self.settings.weight_type, None),
        }
        .map_err(|e| ApiError::internal(format!("cannot load chat model: {e}")))?;
        let context = slot_context(
            chat.model.config.max_position_embeddings,
            &self.llm_settings,
        )
        .map_err(ApiError::internal)?;
        let engine = Engine::new(&chat.model, self.llm_settings.parallel, context, DType::F16)
            .map_err(|e| ApiError::internal(format!("cannot allocate the KV caches: {e}")))?;
        self.llm = Some(LoadedLlm {
            path: path.to_path_buf(),
            chat,
            engine,
        });
        self.metrics.set_loaded(ModelKind::Llm, Some(path));
        Ok(())
    }

    /// Frees the chat model (an image job needs the memory under a budget).
    pub(super) fn unload_llm(&mut self) {
        self.llm = None;
        self.metrics.set_loaded(ModelKind::Llm, None);
    }
}
