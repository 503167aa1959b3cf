//! printf.cu: device-side printf (vprintf) in every conversion, console order and limit,
//! assert and trap.

use netgpu_ptx::LaunchError;

use crate::util::*;

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

#[test]
fn output_is_ordered_by_block_warp_and_call() {
    for file in ["printf.ptx", "sm90/printf.ptx"] {
        let m = module(file);
        let gpu = Gpu::new();
        let mut l = Launch::new(&m, "print_basic", 2, 40);
        l.threads = 4;
        let out = l.output(&gpu, &[&i32b(100)]);
        out.result.unwrap();
        let mut want = String::new();
        for b in 0..2 {
            for t in 0..40 {
                want += &format!("block {b} thread {t} value {}\n", 100 + t);
            }
        }
        assert_eq!(text(&out.console), want);
        assert_eq!(out.console_dropped, 0);

        // Several calls per thread: all lanes of a warp print call k before any prints k+1.
        let out = Launch::new(&m, "print_loop", 1, 64).output(&gpu, &[&i32b(3)]);
        out.result.unwrap();
        let mut want = String::new();
        for w in 0..2 {
            for line in 0..3 {
                for lane in 0..32 {
                    want += &format!(
                        "thread {} line {line} of 3 with some padding to make it long\n",
                        w * 32 + lane
                    );
                }
            }
        }
        assert_eq!(text(&out.console), want);
    }
}

#[test]
fn every_conversion_formats_as_cuda_does() {
    for file in ["printf.ptx", "sm90/printf.ptx"] {
        let m = module(file);
        let gpu = Gpu::new();
        let s = gpu.upload(b"hello\0");
        let (d, ll, ull) = (3.25159f64, -1_234_567_890_123i64, 0xfedc_ba98_7654_3210u64);
        let out = Launch::new(&m, "print_formats", 1, 1).output(
            &gpu,
            &[
                &u64b(s),
                &d.to_le_bytes(),
                &ll.to_le_bytes(),
                &ull.to_le_bytes(),
            ],
        );
        out.result.unwrap();
        let want = format!(
            "[   42|42   |00042|+42| 42|-7]\n\
         [4000000000|beef|BEEF|0xff|10|010|     0ab]\n\
         [3.251590|3.25|     3.252|3.3       |3.251590e+00|3.252E+00|3.25159|1E-10|100000]\n\
         [abc|hello|hel|   hello|hello   |]\n\
         [{ll}|{ll}|{ull}|{ull:x}|{}|{}]\n\
         [0x1234|%| 99.5%]\n\
         [inf|-inf|nan|0.000000e+00]\n\
         [     7|8   |3.14]\n\
         no args\n",
            ll as i16, ll as i8
        );
        assert_eq!(text(&out.console), want);
    }
}

#[test]
fn console_output_beyond_the_limit_is_dropped() {
    for file in ["printf.ptx", "sm90/printf.ptx"] {
        let m = module(file);
        let gpu = Gpu::new();
        let mut l = Launch::new(&m, "print_loop", 1, 64);
        l.opts.console_limit = 4096;
        let out = l.output(&gpu, &[&i32b(20)]);
        out.result.unwrap();
        assert!(
            out.console.len() <= 4096,
            "{} bytes kept",
            out.console.len()
        );
        assert!(out.console.len() > 2000, "{} bytes kept", out.console.len());
        let line = "thread 0 line 0 of 20 with some padding to make it long\n".len() as u64;
        assert!(out.console_dropped >= 64 * 20 * (line - 2) - 4096);
        // What is kept is whole lines.
        assert!(out.console.ends_with(b"\n"));
    }
}

#[test]
fn a_failed_assert_prints_its_message_and_fails_the_launch() {
    for file in ["printf.ptx", "sm90/printf.ptx"] {
        let m = module(file);
        let gpu = Gpu::new();
        let mut v = vec![1i32; 64];
        v[37] = 0;
        let dv = gpu.upload(&v);
        let out = Launch::new(&m, "assert_positive", 2, 32).output(&gpu, &[&u64b(dv), &i32b(64)]);
        assert!(
            matches!(
                out.result,
                Err(LaunchError::Assert {
                    block: [1, 0, 0],
                    thread: [5, 0, 0],
                    ..
                })
            ),
            "{:?}",
            out.result
        );
        assert_eq!(out.result.as_ref().unwrap_err().cuda_error(), 710);
        let t = text(&out.console);
        assert!(
        t.starts_with("tests/kernels/nvcc/printf.cu:")
            && t.ends_with(
                ": void assert_positive(const int *, int): block: [1,0,0], thread: [5,0,0] Assertion `v[i] > 0` failed.\n"
            ),
        "{t}"
    );
        // All positive: no output, success.
        let ok = gpu.upload(&vec![1i32; 64]);
        let out = Launch::new(&m, "assert_positive", 2, 32).output(&gpu, &[&u64b(ok), &i32b(64)]);
        out.result.unwrap();
        assert!(out.console.is_empty());
    }
}

#[test]
fn trap_fails_the_launch() {
    for file in ["printf.ptx", "sm90/printf.ptx"] {
        let m = module(file);
        let gpu = Gpu::new();
        let r = Launch::new(&m, "trap_now", 3, 32).run(&gpu, &[]);
        let e = r.unwrap_err();
        assert!(matches!(e, LaunchError::Trap { .. }), "{e:?}");
        assert_eq!(e.cuda_error(), 719);
    }
}
