//! An SDK pipeline with in-memory exporters and readers for what it exported.

use isopace_otel::OtelObserver;
use opentelemetry::KeyValue;
use opentelemetry_sdk::{
    metrics::{
        InMemoryMetricExporter, SdkMeterProvider,
        data::{AggregatedMetrics, Metric, MetricData},
    },
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData},
};

/// An observer wired to an SDK whose exporters keep everything in memory.
pub(crate) struct Telemetry {
    pub(crate) observer: OtelObserver,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    spans: InMemorySpanExporter,
    metrics: InMemoryMetricExporter,
}

impl Telemetry {
    pub(crate) fn new() -> Self {
        let spans = InMemorySpanExporter::default();
        let tracer_provider = SdkTracerProvider::builder()
            .with_simple_exporter(spans.clone())
            .build();
        let metrics = InMemoryMetricExporter::default();
        let meter_provider = SdkMeterProvider::builder()
            .with_periodic_exporter(metrics.clone())
            .build();
        let observer = OtelObserver::from_providers(&tracer_provider, &meter_provider);
        Telemetry {
            observer,
            tracer_provider,
            meter_provider,
            spans,
            metrics,
        }
    }

    /// Every span ended so far.
    pub(crate) fn spans(&self) -> Vec<SpanData> {
        self.tracer_provider.force_flush().expect("flush spans");
        self.spans.get_finished_spans().expect("finished spans")
    }

    /// The one ended span named `name`.
    pub(crate) fn span(&self, name: &str) -> SpanData {
        let mut found: Vec<SpanData> = self
            .spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        assert_eq!(found.len(), 1, "exactly one span named {name}");
        found.remove(0)
    }

    /// `read` applied to the metric named `name` in the latest export (cumulative, so it
    /// holds everything recorded so far).
    fn with_metric<R>(&self, name: &str, read: impl FnOnce(&Metric) -> R) -> R {
        self.meter_provider.force_flush().expect("flush metrics");
        let exported = self
            .metrics
            .get_finished_metrics()
            .expect("finished metrics");
        let latest = exported.last().expect("an export");
        let metric = latest
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no metric named {name}"));
        read(metric)
    }

    /// The description the metric `name` was exported with.
    pub(crate) fn description(&self, name: &str) -> String {
        self.with_metric(name, |metric| metric.description().to_owned())
    }

    /// Every series of the gauge `name` in a fresh collection, as (attributes sorted by key,
    /// value), sorted; empty when the gauge exported nothing.
    pub(crate) fn gauge_series(&self, name: &str) -> Vec<(Vec<KeyValue>, f64)> {
        self.meter_provider.force_flush().expect("flush metrics");
        let exported = self
            .metrics
            .get_finished_metrics()
            .expect("finished metrics");
        let Some(metric) = exported
            .last()
            .expect("an export")
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == name)
        else {
            return Vec::new();
        };
        let AggregatedMetrics::F64(MetricData::Gauge(gauge)) = metric.data() else {
            panic!("{name} is not an f64 gauge: {:?}", metric.data());
        };
        let mut series: Vec<(Vec<KeyValue>, f64)> = gauge
            .data_points()
            .map(|p| {
                let mut attrs: Vec<KeyValue> = p.attributes().cloned().collect();
                attrs.sort_by(|a, b| a.key.cmp(&b.key));
                (attrs, p.value())
            })
            .collect();
        let text = |attrs: &[KeyValue]| -> Vec<String> {
            attrs
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect()
        };
        series.sort_by_key(|(attrs, _)| text(attrs));
        series
    }

    /// The counter total of the series with exactly `attrs`.
    pub(crate) fn counter_sum(&self, name: &str, attrs: &[KeyValue]) -> u64 {
        self.with_metric(name, |metric| {
            let AggregatedMetrics::U64(MetricData::Sum(sum)) = metric.data() else {
                panic!("{name} is not a u64 sum: {:?}", metric.data());
            };
            assert!(sum.is_monotonic(), "{name} is monotonic");
            sum.data_points()
                .find(|p| same_attrs(p.attributes(), attrs))
                .unwrap_or_else(|| panic!("no series {attrs:?} in {name}"))
                .value()
        })
    }

    /// The count and sum of the histogram series with exactly `attrs`.
    pub(crate) fn histogram_count_sum(&self, name: &str, attrs: &[KeyValue]) -> (u64, f64) {
        self.with_metric(name, |metric| {
            let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = metric.data() else {
                panic!("{name} is not an f64 histogram: {:?}", metric.data());
            };
            let point = histogram
                .data_points()
                .find(|p| same_attrs(p.attributes(), attrs))
                .unwrap_or_else(|| panic!("no series {attrs:?} in {name}"));
            (point.count(), point.sum())
        })
    }
}

fn same_attrs<'a>(got: impl Iterator<Item = &'a KeyValue>, want: &[KeyValue]) -> bool {
    let mut got: Vec<&KeyValue> = got.collect();
    let mut want: Vec<&KeyValue> = want.iter().collect();
    got.sort_by(|a, b| a.key.cmp(&b.key));
    want.sort_by(|a, b| a.key.cmp(&b.key));
    got == want
}

/// The value of attribute `key`, if the span has it.
pub(crate) fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a opentelemetry::Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}
