//! Cost of the adapter over the OpenTelemetry SDK: counter adds, histogram records, spans.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use isopace_observe::{Observer, attr};
use isopace_otel::OtelObserver;
use opentelemetry::{
    KeyValue,
    metrics::MeterProvider as _,
    trace::{Span as _, Tracer as _, TracerProvider as _},
};
use opentelemetry_sdk::{
    metrics::{InMemoryMetricExporter, SdkMeterProvider},
    trace::SdkTracerProvider,
};

fn providers() -> (SdkTracerProvider, SdkMeterProvider) {
    // No span processor: spans are built, sampled and recorded, then dropped on end, so the
    // numbers are the adapter plus the SDK, not an exporter.
    let tracer_provider = SdkTracerProvider::builder().build();
    let meter_provider = SdkMeterProvider::builder()
        .with_periodic_exporter(InMemoryMetricExporter::default())
        .build();
    (tracer_provider, meter_provider)
}

fn counter(c: &mut Criterion) {
    let (tracer_provider, meter_provider) = providers();
    let obs = OtelObserver::from_providers(&tracer_provider, &meter_provider);
    let mut group = c.benchmark_group("counter_add");

    let counter = obs.counter("requests");
    group.bench_function("isopace/2_attrs", |b| {
        b.iter(|| {
            counter.add(
                black_box(1),
                &[attr("outcome", "approved"), attr("mti", "0200")],
            )
        })
    });
    let direct = meter_provider
        .meter("direct")
        .u64_counter("requests")
        .build();
    let kvs = [
        KeyValue::new("outcome", "approved"),
        KeyValue::new("mti", "0200"),
    ];
    group.bench_function("otel_direct/2_attrs", |b| {
        b.iter(|| direct.add(black_box(1), &kvs))
    });
    group.bench_function("isopace/no_attrs", |b| {
        b.iter(|| counter.add(black_box(1), &[]))
    });
    group.bench_function("isopace/lookup_and_add", |b| {
        b.iter(|| obs.counter(black_box("requests")).add(1, &[]))
    });
    group.finish();
}

fn histogram(c: &mut Criterion) {
    let (tracer_provider, meter_provider) = providers();
    let obs = OtelObserver::from_providers(&tracer_provider, &meter_provider);
    let histogram = obs.histogram("latency");
    c.bench_function("histogram_observe/isopace/1_attr", |b| {
        b.iter(|| histogram.observe(black_box(0.25), &[attr("route", "a")]))
    });
}

fn span(c: &mut Criterion) {
    let (tracer_provider, meter_provider) = providers();
    let obs = OtelObserver::from_providers(&tracer_provider, &meter_provider);
    let mut group = c.benchmark_group("span_start_end");
    group.bench_function("isopace/1_attr", |b| {
        b.iter(|| {
            obs.start_span(black_box("authorize"), &[attr("mti", "0200")])
                .end()
        })
    });
    let tracer = tracer_provider.tracer("direct");
    group.bench_function("otel_direct/1_attr", |b| {
        b.iter(|| {
            let mut span = tracer
                .span_builder(black_box("authorize"))
                .with_attributes([KeyValue::new("mti", "0200")])
                .start(&tracer);
            span.end();
        })
    });
    group.finish();
}

criterion_group!(benches, counter, histogram, span);
criterion_main!(benches);
