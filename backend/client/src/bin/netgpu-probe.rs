//! `netgpu-probe`: drives a netgpu backend the way a virtual GPU would and reports what it
//! found: the device, a round-trip time, verified copies, and (with a PTX module) a kernel
//! whose result is checked. The sample client of the README's quick start.

use std::path::PathBuf;
use std::time::Instant;

use std::sync::Arc;

use clap::Parser;
use netgpu_client::{Client, ClientError, ClientOptions};
use netgpu_tls::{ClientTls, ClientTlsConfig};

/// Connects to a netgpu-backend, checks that it computes correctly, and prints what it found.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Backend address.
    #[arg(long, default_value = "127.0.0.1:7070")]
    backend: String,
    /// File holding the backend's token (optional when a client certificate names the
    /// tenant).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// PTX module with a `vector_add(const float*, const float*, float*, int)` kernel to run.
    #[arg(long)]
    ptx: Option<PathBuf>,
    /// Elements in the vector addition.
    #[arg(long, default_value_t = 1 << 20)]
    n: u32,
    /// CA certificate (PEM) that issued the backend's certificate: connect with TLS.
    /// Without it the connection is plain TCP, which only a loopback backend accepts.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// This client's certificate (PEM), naming its tenant.
    #[arg(long, value_name = "PEM", requires = "key")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "PEM", requires = "cert")]
    key: Option<PathBuf>,
    /// The name the backend's certificate must carry (default: the host of --backend).
    #[arg(long)]
    server_name: Option<String>,
    /// A certificate revocation list (PEM or DER) of the backend's CA: refuse a revoked
    /// backend certificate (repeatable).
    #[arg(long, value_name = "FILE", requires = "ca")]
    crl: Vec<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netgpu-probe: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let token = match &args.token_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read token file {}: {e}", f.display()))?,
        None => String::new(),
    };
    let mut opts = ClientOptions::default();
    if let Some(ca) = args.ca.clone() {
        let tls = ClientTls::load(ClientTlsConfig {
            ca,
            cert: args.cert.clone(),
            key: args.key.clone(),
            server_name: args.server_name.clone(),
            crls: args.crl.clone(),
        })
        .map_err(|e| netgpu_tls::chain(&e))?;
        opts.tls = Some(Arc::new(tls));
    }
    let c = Client::connect_with(
        &args.backend,
        token.lines().next().unwrap_or("").trim(),
        opts,
    )
    .await
    .map_err(|e| format!("{e} (is netgpu-backend running on {}?)", args.backend))?;
    let d = c.device_query().await?;
    println!("device      {} ({} executor)", d.name, d.executor);
    println!(
        "memory      {} MiB (this session's quota)",
        d.total_mem >> 20
    );
    println!(
        "compute     sm_{}{}, {} multiprocessors",
        d.cc_major, d.cc_minor, d.multiprocessors
    );

    let t = Instant::now();
    let n_rtt = 1000u32;
    for _ in 0..n_rtt {
        c.null().await?;
    }
    println!(
        "round trip  {:.1} us",
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n_rtt)
    );

    let ctx = c.ctx_create(0).await?;
    let bytes = u64::from(args.n) * 4;
    let a = c.mem_alloc(ctx, bytes).await?;
    let b = c.mem_alloc(ctx, bytes).await?;
    let out = c.mem_alloc(ctx, bytes).await?;
    let xs: Vec<f32> = (0..args.n).map(|i| i as f32 * 0.5).collect();
    let ys: Vec<f32> = (0..args.n).map(|i| 1000.0 - i as f32).collect();
    let t = Instant::now();
    c.memcpy_htod(ctx, a, &to_bytes(&xs), 0).await?;
    c.memcpy_htod(ctx, b, &to_bytes(&ys), 0).await?;
    let back = c.memcpy_dtoh(ctx, a, bytes, 0).await?;
    let secs = t.elapsed().as_secs_f64();
    if back != to_bytes(&xs) {
        return Err("device memory returned different bytes than were copied in".into());
    }
    println!(
        "copies      {} MiB in, {} MiB out, verified ({:.0} MB/s)",
        (2 * bytes) >> 20,
        bytes >> 20,
        3.0 * bytes as f64 / secs / 1e6
    );

    match &args.ptx {
        None => println!("kernel      skipped (pass --ptx FILE to run vector_add)"),
        Some(path) => {
            let image =
                std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let m = c
                .module_load(ctx, &image)
                .await
                .map_err(|e| describe(e, "loading the PTX module"))?;
            let f = c
                .module_get_function(m, "vector_add")
                .await
                .map_err(|e| describe(e, "finding vector_add"))?;
            let mut params = vec![0u8; f.param_buffer_size as usize];
            let args_bytes: [&[u8]; 4] = [
                &a.to_le_bytes(),
                &b.to_le_bytes(),
                &out.to_le_bytes(),
                &args.n.to_le_bytes(),
            ];
            if f.params.len() != 4 {
                return Err(
                    format!("vector_add has {} parameters, expected 4", f.params.len()).into(),
                );
            }
            for (p, v) in f.params.iter().zip(args_bytes) {
                let o = p.offset as usize;
                params[o..o + v.len()].copy_from_slice(v);
            }
            let t = Instant::now();
            let block = 256u32;
            c.launch_kernel(
                f.handle,
                [args.n.div_ceil(block), 1, 1],
                [block, 1, 1],
                0,
                0,
                &params,
            )
            .await?;
            c.ctx_synchronize(ctx)
                .await
                .map_err(|e| describe(e, "running vector_add"))?;
            let secs = t.elapsed().as_secs_f64();
            let got = c.memcpy_dtoh(ctx, out, bytes, 0).await?;
            let wrong = got
                .chunks_exact(4)
                .zip(xs.iter().zip(&ys))
                .filter(|(g, (x, y))| f32::from_le_bytes([g[0], g[1], g[2], g[3]]) != *x + *y)
                .count();
            if wrong != 0 {
                return Err(format!("vector_add: {wrong} of {} results wrong", args.n).into());
            }
            println!(
                "kernel      vector_add over {} elements: all correct ({:.1} ms)",
                args.n,
                secs * 1e3
            );
        }
    }
    c.ctx_destroy(ctx).await?;
    println!("ok");
    Ok(())
}

fn describe(e: ClientError, what: &str) -> String {
    format!("{what}: {e}")
}

fn to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
