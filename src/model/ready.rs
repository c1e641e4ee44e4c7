//! Gradient readiness during an autograd backward pass, for the data-parallel gradient sum:
//! as DDP does with its buckets, each parameter's range of the flat gradient buffer is
//! reported final as soon as autograd has accumulated it (a post-accumulate-grad hook), so
//! that summing the last layers across processes overlaps the backward pass through the
//! first ones. Ranges are reported in one fixed order (from the end of the buffer towards its
//! start, `Model::gradient_ranges`) whatever order autograd finishes them in, so every
//! process issues the same collectives; what autograd never reaches (an unused parameter)
//! is reported when the pass ends.

use std::ffi::c_void;
use std::sync::Mutex;

use anyhow::{anyhow, Result};
use tch::Tensor;

/// The `ready` callback of the backward pass in progress.
type Ready = dyn FnMut(i64, i64) -> Result<()>;

pub(super) struct GradHooks {
    state: Box<Mutex<State>>,
}

struct State {
    /// Each parameter's range, in report order.
    ranges: Vec<(i64, i64)>,
    done: Vec<bool>,
    /// The next range to report.
    next: usize,
    /// Set only while `backward` runs.
    ready: Option<*mut Ready>,
    error: Option<anyhow::Error>,
}

// SAFETY: `ready` is only set while the backward pass that may call it runs, and read under
// the mutex; the closure it points to outlives that pass.
unsafe impl Send for State {}

impl GradHooks {
    /// Hooks on each `(leaf, range)`; ranges are reported from the highest start down.
    pub(super) fn new(mut leaves: Vec<(Tensor, (i64, i64))>) -> Result<GradHooks> {
        leaves.sort_by_key(|(_, (start, _))| std::cmp::Reverse(*start));
        let ranges = leaves.iter().map(|(_, range)| *range).collect();
        let done = vec![false; leaves.len()];
        let hooks =
            GradHooks { state: Box::new(Mutex::new(State { ranges, done, next: 0, ready: None, error: None })) };
        let ctx = &*hooks.state as *const Mutex<State> as *mut c_void;
        for (index, (mut leaf, _)) in leaves.into_iter().enumerate() {
            // SAFETY: `ctx` is the boxed state, which lives as long as the model and so as
            // any backward pass through its parameters; `grad_ready` does not unwind.
            unsafe { crate::shim::on_grad(&mut leaf, grad_ready, ctx, index)? };
        }
        Ok(hooks)
    }

    /// The ranges in the order they are reported.
    pub(super) fn ranges(&self) -> Vec<(i64, i64)> {
        self.state.lock().map(|s| s.ranges.clone()).unwrap_or_default()
    }

    /// Runs `backward` (an autograd pass) with `ready` told of each range as it becomes
    /// final, and of the rest at the end.
    pub(super) fn around<'a>(
        &self,
        ready: &'a mut (dyn FnMut(i64, i64) -> Result<()> + 'a),
        backward: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let poisoned = || anyhow!("gradient hooks poisoned");
        {
            let mut state = self.state.lock().map_err(|_| poisoned())?;
            state.done.iter_mut().for_each(|d| *d = false);
            state.next = 0;
            // SAFETY: only the lifetime is erased; the pointer is cleared below, before
            // `ready` goes out of scope, and nothing calls it after that.
            let ready: *mut (dyn FnMut(i64, i64) -> Result<()> + 'a) = ready;
            state.ready = Some(unsafe {
                std::mem::transmute::<*mut (dyn FnMut(i64, i64) -> Result<()> + 'a), *mut Ready>(ready)
            });
        }
        let ran = backward();
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        let all = state.done.len();
        state.report_through(all);
        state.ready = None;
        let error = state.error.take();
        ran?;
        error.map_or(Ok(()), Err)
    }
}

impl State {
    /// Marks `index` done and reports every range, in order, up to the first not done; with
    /// `index == len`, reports all that are left.
    fn report_through(&mut self, index: usize) {
        if let Some(done) = self.done.get_mut(index) {
            *done = true;
        }
        while self.next < self.ranges.len() && (index == self.done.len() || self.done[self.next]) {
            let (start, len) = self.ranges[self.next];
            self.next += 1;
            if let (Some(ready), None) = (self.ready, &self.error) {
                // SAFETY: set by `around` for the duration of the pass (see `State`).
                if let Err(e) = unsafe { (*ready)(start, len) } {
                    self.error = Some(e);
                }
            }
        }
    }
}

extern "C" fn grad_ready(ctx: *mut c_void, index: usize) {
    // SAFETY: `ctx` is the boxed `Mutex<State>` of `GradHooks::new`.
    let state = unsafe { &*(ctx as *const Mutex<State>) };
    if let Ok(mut state) = state.lock() {
        state.report_through(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use tch::{Device, Kind};

    #[test]
    fn ranges_are_reported_as_autograd_finishes_them_in_one_fixed_order() {
        let leaf = |n: i64| Tensor::ones([n], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let (a, b, c) = (leaf(2), leaf(3), leaf(1));
        let hooks =
            GradHooks::new(vec![(a.shallow_clone(), (0, 2)), (b.shallow_clone(), (2, 3)), (c.shallow_clone(), (5, 1))])
                .unwrap();
        assert_eq!(hooks.ranges(), [(5, 1), (2, 3), (0, 2)]);
        let reported = RefCell::new(Vec::new());
        let during = RefCell::new(Vec::new());
        let mut ready = |start: i64, len: i64| -> Result<()> {
            reported.borrow_mut().push((start, len));
            Ok(())
        };
        // b takes no part: c is final during the pass; a waits for b, which only the end of
        // the pass reports, to keep the order.
        let loss = (&a * 2.0).sum(Kind::Float) + (&c * 3.0).sum(Kind::Float);
        hooks
            .around(&mut ready, || {
                loss.f_backward()?;
                *during.borrow_mut() = reported.borrow().clone();
                Ok(())
            })
            .unwrap();
        assert_eq!(*during.borrow(), [(5, 1)]);
        assert_eq!(*reported.borrow(), [(5, 1), (2, 3), (0, 2)]);
        // A failing `ready` is the pass's error.
        let mut failing = |_: i64, _: i64| -> Result<()> { Err(anyhow!("peer lost")) };
        let loss = (&a * 2.0).sum(Kind::Float);
        let err = hooks.around(&mut failing, || Ok(loss.f_backward()?)).unwrap_err();
        assert_eq!(err.to_string(), "peer lost");
    }
}
