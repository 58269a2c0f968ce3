//! `snapkv demo`: sample data → build → publish to a local store → serve.

use anyhow::Context;
use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

const DATASET: &str = "content";
/// The demo's first version: fixed, so re-runs find what they built before.
const VERSION: &str = "20261127T000000Z";
const COUNTRIES: [&str; 20] = [
    "AR", "AU", "BR", "CA", "DE", "ES", "FR", "GB", "IN", "IT", "JP", "KR", "MX", "NL", "NO", "PL",
    "SE", "TR", "US", "ZA",
];
const GENRES: [&str; 8] = [
    "drama",
    "comedy",
    "documentary",
    "thriller",
    "animation",
    "romance",
    "sci-fi",
    "crime",
];

/// Generate sample data, build a snapshot, publish it to a local store and serve it.
///
/// Everything lives under --dir; a re-run reuses what is there (delete the directory to start
/// over). Works offline.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  cargo run --release -- demo\n  snapkv demo --dir /tmp/demo --rows 100000 --listen 127.0.0.1:9000"
)]
pub struct Args {
    /// Where the sample data, the store and the reader's cache go.
    #[arg(long, value_name = "DIR", default_value = "snapkv-demo")]
    dir: PathBuf,
    /// Rows of sample data (titles × countries).
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    rows: u64,
    /// Address the reader listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
}

/// SplitMix64: a small seeded generator, so the sample data is the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Daily content performance: one row per title and country.
fn write_sample(path: &Path, rows: u64) -> anyhow::Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("title_id", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new("date", DataType::Date32, false),
        Field::new("views", DataType::Int64, false),
        Field::new("hours_viewed", DataType::Float64, false),
        Field::new("rank", DataType::Int32, true),
        Field::new(
            "genres",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]));
    let tmp = path.with_extension("parquet.tmp");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    let mut rng = Rng(20_261_127);
    let countries = COUNTRIES.len() as u64;
    let date = 20_783; // 2026-11-26, days since 1970-01-01
    let mut row = 0u64;
    while row < rows {
        let n = (rows - row).min(65_536);
        let (mut ids, mut cs, mut titles) = (Vec::new(), Vec::new(), Vec::new());
        let (mut views, mut hours, mut ranks) = (Vec::new(), Vec::new(), Vec::new());
        let mut genres = ListBuilder::new(StringBuilder::new());
        for i in row..row + n {
            let title = i / countries;
            ids.push(format!("t{title:07}"));
            cs.push(COUNTRIES[(i % countries) as usize]);
            titles.push(format!("Title {title}"));
            let v = rng.below(5_000_000);
            views.push(v as i64);
            hours
                .push((v as f64 * (0.5 + rng.below(1000) as f64 / 1000.0) * 100.0).round() / 100.0);
            ranks.push((rng.below(4) != 0).then(|| 1 + rng.below(1000) as i32));
            if rng.below(10) == 0 {
                genres.append(false);
            } else {
                for _ in 0..=rng.below(2) {
                    genres
                        .values()
                        .append_value(GENRES[rng.below(GENRES.len() as u64) as usize]);
                }
                genres.append(true);
            }
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(StringArray::from(cs)),
            Arc::new(StringArray::from(titles)),
            Arc::new(Date32Array::from(vec![date; n as usize])),
            Arc::new(Int64Array::from(views)),
            Arc::new(Float64Array::from(hours)),
            Arc::new(Int32Array::from(ranks)),
            Arc::new(genres.finish()),
        ];
        writer.write(&RecordBatch::try_new(schema.clone(), columns)?)?;
        row += n;
    }
    writer.close()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn run(args: Args, log_format: super::LogFormat) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let data = args.dir.join("data");
    let store_dir = args.dir.join("store");
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    super::return_freed_memory();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let store = snapkv_store::Store::open(&store_dir.display().to_string(), &[])?;
    let published = runtime.block_on(store.current(DATASET))?;
    if published.is_none() {
        let parquet = data.join("content-performance.parquet");
        if !parquet.exists() {
            eprintln!(
                "generating {} rows of sample data in {} ...",
                args.rows,
                parquet.display()
            );
            write_sample(&parquet, args.rows)?;
        }
        let snapshot = args.dir.join(format!("{DATASET}-{VERSION}.snapkv"));
        eprintln!("building {} ...", snapshot.display());
        let mut options = snapkv_builder::BuildOptions::new(
            vec![snapkv_builder::Input::Path(data.display().to_string())],
            vec!["country".into(), "title_id".into()],
        );
        options.dataset = Some(DATASET.into());
        options.version = Some(VERSION.into());
        let summary = snapkv_builder::build(&options, &snapshot, &snapkv_builder::NoProgress)?;
        eprintln!(
            "built {} keys, {} bytes in {:.1}s",
            summary.keys, summary.bytes_out, summary.seconds
        );
        eprintln!("publishing to {} ...", store_dir.display());
        let mut publish = snapkv_store::PublishOptions::default();
        publish.version = Some(VERSION.into());
        publish.reason = Some("snapkv demo: a generated catalogue of titles".into());
        runtime.block_on(store.publish(DATASET, &[&snapshot], &publish))?;
        std::fs::remove_file(&snapshot)?;
    } else {
        eprintln!("reusing the store in {}", store_dir.display());
    }
    let mut config = snapkv_reader::Config::new(vec![snapkv_reader::Source::Store {
        name: DATASET.into(),
        store,
        cache: snapkv_store::Cache::new(args.dir.join("cache")),
    }]);
    config.poll_interval = std::time::Duration::from_secs(2);
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        let dir = args.dir.display();
        let url = format!("http://{addr}/v1/datasets/{DATASET}");
        super::print_listening(log_format, addr)?;
        if log_format == super::LogFormat::Json {
            let ready = serde_json::json!({
                "message": "ready",
                "seconds": started.elapsed().as_secs_f64(),
                "dataset": format!("{url}"),
            });
            outln!("{ready}")?;
        } else {
            outln!(
            "\nready in {:.1}s. Try:\n\n  curl {url}/keys/SE/t0000042\n  \
             curl -X POST {url}/mget -d '{{\"keys\": [\"SE/t0000042\", \"US/t0000007\", \"XX/none\"]}}'\n  \
             curl '{url}/scan?prefix=JP/t000001&limit=5'\n  \
             curl {url}/query -d '{{\"prefix\": \"SE/\", \"aggregates\": {{\"views\": {{\"sum\": \"views\"}}, \"top\": {{\"top_k\": {{\"by\": \"views\", \"k\": 3}}}}}}}}'\n\n\
             Change parameters and see the answers live (from a checkout of the repository):\n\n  \
             pip install streamlit ./python && SNAPKV_URL=http://{addr} streamlit run examples/streamlit/app.py\n\n\
             Publish a new version while it runs (it is picked up within seconds):\n\n  \
             {bin} build --input {dir}/data --key country,title_id --output {dir}/next.snapkv\n  \
             {bin} publish {dir}/next.snapkv --store {dir}/store --dataset {DATASET}\n\n\
             Ctrl-C stops the server.",
            started.elapsed().as_secs_f64(),
            bin = this_command(),
            )?;
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        snapkv_reader::run(listener, config, super::serve::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// How to run this same binary again: `cargo run --release --` when `cargo run` started it,
/// `snapkv` when that is what `PATH` finds, else its path.
fn this_command() -> String {
    let Ok(exe) = std::env::current_exe().and_then(std::fs::canonicalize) else {
        return "snapkv".to_owned();
    };
    let under_cargo = std::env::var_os("CARGO_MANIFEST_DIR")
        .and_then(|d| std::fs::canonicalize(d).ok())
        .is_some_and(|d| exe.starts_with(d.join("target")));
    if under_cargo {
        let release = exe.parent().is_some_and(|p| p.ends_with("release"));
        return if release {
            "cargo run --release --"
        } else {
            "cargo run --"
        }
        .to_owned();
    }
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::canonicalize(dir.join("snapkv")).is_ok_and(|p| p == exe))
    });
    if on_path {
        "snapkv".to_owned()
    } else {
        exe.display().to_string()
    }
}
