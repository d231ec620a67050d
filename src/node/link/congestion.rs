//! Link congestion control: the controller `mesh.congestion` names, as a quinn factory,
//! and the capacity estimate a link reports to the scheduler.
//!
//! `model` is [`crate::core::congestion::PathModel`] behind quinn's `Controller` trait; the
//! others are quinn's own controllers with their defaults.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{self, Controller, ControllerFactory, ControllerMetrics};

use crate::config::Congestion;
use crate::core::congestion::PathModel;

/// The factory quinn builds each link's controller with.
pub fn factory(choice: Congestion) -> Arc<dyn ControllerFactory + Send + Sync> {
    match choice {
        Congestion::Model => Arc::new(ModelFactory),
        Congestion::Bbr => Arc::new(congestion::BbrConfig::default()),
        Congestion::Cubic => Arc::new(congestion::CubicConfig::default()),
        Congestion::NewReno => Arc::new(congestion::NewRenoConfig::default()),
    }
}

/// What a link's controller knows of its path's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PathEstimate {
    /// Bottleneck bandwidth, bytes per second.
    pub bandwidth: u64,
    /// Propagation round trip.
    pub min_rtt: Duration,
    /// Whether `bandwidth` was measured with the sender never short of data (a capacity
    /// figure) rather than only from what an idle link offered (a lower bound); see
    /// [`PathModel::probed`].
    pub probed: bool,
}

/// The bottleneck estimate of `conn`'s controller, when it is the model and has measured.
pub(crate) fn estimate(conn: &quinn::Connection) -> Option<PathEstimate> {
    let controller = conn.congestion_state().into_any().downcast::<ModelController>().ok()?;
    let model = &controller.model;
    Some(PathEstimate { bandwidth: model.bandwidth()?, min_rtt: model.min_rtt()?, probed: model.probed() })
}

/// Builds [`ModelController`]s.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ModelFactory;

impl ControllerFactory for ModelFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(ModelController { model: Arc::new(PathModel::new(now, current_mtu)) })
    }
}

/// The model-based controller as quinn sees it. The model sits behind an `Arc` so that
/// `clone_box` (called for each stats query) copies a pointer, not the model's send
/// records; quinn's calls mutate it through `Arc::make_mut`, which only copies when a
/// stats snapshot is still alive.
#[derive(Debug, Clone)]
pub(crate) struct ModelController {
    model: Arc<PathModel>,
}

impl ModelController {
    fn model(&mut self) -> &mut PathModel {
        Arc::make_mut(&mut self.model)
    }
}

impl Controller for ModelController {
    fn on_sent(&mut self, now: Instant, bytes: u64, _last_packet_number: u64) {
        self.model().on_sent(now, bytes);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        _rtt: &quinn_proto::RttEstimator,
    ) {
        self.model().on_ack(now, sent, bytes, app_limited);
    }

    fn on_end_acks(&mut self, now: Instant, in_flight: u64, app_limited: bool, _largest: Option<u64>) {
        self.model().on_end_acks(now, in_flight, app_limited);
    }

    fn on_congestion_event(&mut self, now: Instant, _sent: Instant, persistent: bool, lost_bytes: u64) {
        self.model().on_loss(now, persistent, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.model().on_mtu(new_mtu);
    }

    fn window(&self) -> u64 {
        self.model.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut m = ControllerMetrics::default();
        m.congestion_window = self.model.window();
        m.pacing_rate = self.model.bandwidth().map(|b| b * 8);
        m
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.model.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}
