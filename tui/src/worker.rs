//! Re-simulation off the UI thread: each request runs on its own thread and its outcome comes back over a
//! channel, tagged with a generation so that an answer to a superseded request is dropped.

use crate::session::{Progress, Request, Session, load};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};

/// A finished load: which request it answers and what came of it.
pub struct Outcome {
    pub generation: u64,
    pub result: Result<Session, String>,
}

/// Starts loads in the background and hands back the newest finished one.
pub struct Worker {
    tx: Sender<Outcome>,
    rx: Receiver<Outcome>,
    generation: u64,
    /// How a request becomes a session; tests swap in a slow one.
    loader: Loader,
    /// Progress of the newest request.
    progress: Arc<Progress>,
}

/// Turns a request into a session, counting simulated iterations.
pub type Loader = fn(Request, &Progress) -> Result<Session, String>;

impl Default for Worker {
    fn default() -> Self {
        Worker::with_loader(load)
    }
}

impl Worker {
    /// A worker that runs `loader` for each request.
    pub fn with_loader(loader: Loader) -> Self {
        let (tx, rx) = channel();
        Worker {
            tx,
            rx,
            generation: 0,
            loader,
            progress: Arc::default(),
        }
    }

    /// Starts loading `request`; any load still running is superseded.
    pub fn start(&mut self, request: Request) {
        self.generation += 1;
        let generation = self.generation;
        let tx = self.tx.clone();
        let loader = self.loader;
        self.progress = Arc::default();
        let progress = Arc::clone(&self.progress);
        std::thread::spawn(move || {
            // A panic in the simulator must not take the UI down: report it like an error.
            let run = std::panic::AssertUnwindSafe(move || loader(request, &progress));
            let result = std::panic::catch_unwind(run).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| p.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(format!("the simulation panicked: {msg}"))
            });
            // The receiver is gone only when the app has quit.
            let _ = tx.send(Outcome { generation, result });
        });
    }

    /// Whether the newest request is still running.
    pub fn busy(&self, answered: u64) -> bool {
        answered < self.generation
    }

    /// Iterations simulated and in all, for the newest request (total 0 until the scenario is parsed).
    pub fn progress(&self) -> (usize, usize) {
        (
            self.progress.done.load(Ordering::Relaxed),
            self.progress.total.load(Ordering::Relaxed),
        )
    }

    /// The newest generation started.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The answer to the newest request, if it has arrived; older answers are discarded.
    pub fn poll(&self) -> Option<Outcome> {
        loop {
            match self.rx.try_recv() {
                Ok(o) if o.generation == self.generation => return Some(o),
                Ok(_) => continue,
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return None,
            }
        }
    }

    /// Blocks until the newest request is answered (tests and the smoke script's headless runs).
    pub fn wait(&self) -> Outcome {
        loop {
            let o = self.rx.recv().expect("the worker keeps a sender");
            if o.generation == self.generation {
                return o;
            }
        }
    }
}
