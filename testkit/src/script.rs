//! What a local provider endpoint answers, request after request: scripted replies used in
//! order, the last one repeating.

use std::collections::VecDeque;
use std::sync::Mutex;

pub struct Script<R> {
    left: Mutex<VecDeque<R>>,
    last: Mutex<Option<R>>,
}

impl<R: Clone> Script<R> {
    pub fn new(replies: Vec<R>) -> Self {
        Self {
            left: Mutex::new(replies.into()),
            last: Mutex::new(None),
        }
    }

    /// The next reply; once the script is used up, the last one again (`otherwise` for an
    /// empty script).
    pub fn next(&self, otherwise: impl FnOnce() -> R) -> R {
        let mut last = self.last.lock().unwrap();
        match self.left.lock().unwrap().pop_front() {
            Some(r) => {
                *last = Some(r.clone());
                r
            }
            None => last.clone().unwrap_or_else(otherwise),
        }
    }
}

impl<R> Default for Script<R> {
    fn default() -> Self {
        Self {
            left: Mutex::new(VecDeque::new()),
            last: Mutex::new(None),
        }
    }
}
