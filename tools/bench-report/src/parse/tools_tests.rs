//! The tool parsers against literal tool output.

use super::tools::*;

const STRACE: &str = "\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 28.10    0.000555          16        34        13 openat
 14.28    0.000282          12        23           close
  0.00    0.000000           0        23           mmap
  4.25    0.000084          42         2         2 statfs
------ ----------- ----------- --------- --------- ----------------
100.00    0.001975          13        82        15 total
";

#[test]
fn strace_counts_by_column() {
    let s = strace_counts(STRACE).unwrap();
    assert_eq!(s.total_calls, 82);
    assert!((s.total_seconds - 0.001975).abs() < 1e-12);
    assert_eq!(s.calls.len(), 4);
    // by calls, then by name
    let top: Vec<_> = s
        .top(3)
        .into_iter()
        .map(|(n, c)| format!("{n} {c}"))
        .collect();
    assert_eq!(top, ["openat 34", "close 23", "mmap 23"]);
}

#[test]
fn strace_total_without_usecs_column() {
    // Older straces leave usecs/call blank on the total row; reading by
    // field number would take the errors (5) for the calls.
    let old = STRACE.replace("          13        82", "                    82");
    assert_eq!(strace_counts(&old).unwrap().total_calls, 82);
}

#[test]
fn strace_t_times() {
    assert_eq!(
        strace_time("close(3)                                = 0 <0.008912>"),
        Some(0.008912)
    );
    assert_eq!(strace_time("+++ exited with 0 +++"), None);
}

#[test]
fn ping_times_and_sent() {
    let p = ping(
        "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\
         64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.066 ms\n\
         64 bytes from 10.0.0.2: icmp_seq=2 ttl=64 time=13.6 ms\n\
         \n--- 10.0.0.2 ping statistics ---\n\
         3 packets transmitted, 2 received, 33.3333% packet loss, time 40ms\n",
    );
    assert_eq!(p.times_ms, [0.066, 13.6]);
    assert_eq!(p.transmitted, Some(3));
}

#[test]
fn hyperfine_in_ms() {
    let t = hyperfine_times_ms(r#"{"results":[{"times":[0.001,0.0025]}]}"#).unwrap();
    assert_eq!(t, [1.0, 2.5]);
    assert!(hyperfine_times_ms("{}").is_err());
}

#[test]
fn numbers_skip_text() {
    assert_eq!(
        numbers("Command exited with non-zero status 1\n1688\n\n1720\n"),
        [1688.0, 1720.0]
    );
}

fn interval(start: f64, seconds: f64, mbit: f64) -> String {
    let bytes = mbit * 1e6 / 8.0 * seconds;
    format!(
        r#"{{"sum":{{"start":{start},"end":{},"seconds":{seconds},"bytes":{bytes},"bits_per_second":{}}}}}"#,
        start + seconds,
        mbit * 1e6
    )
}

#[test]
fn iperf_first_steady_mean() {
    // 6 s run: a burst second, five steady seconds, and the server's
    // few-ms tail, which steady leaves out.
    let mut iv = vec![interval(0.0, 1.0, 30.0)];
    iv.extend((1..6).map(|s| interval(f64::from(s), 1.0, 10.0)));
    iv.push(interval(6.0, 0.004, 500.0));
    let json = format!(
        r#"{{"intervals":[{}],"end":{{"sum_received":{{"bytes":1000,"bits_per_second":8e6}}}}}}"#,
        iv.join(",")
    );
    let r = iperf(&json).unwrap();
    assert_eq!(r.first_mbit(), Some(30.0));
    assert!((r.steady_mbit(6.0).unwrap() - 10.0).abs() < 1e-9);
    assert_eq!(r.per_second_mbit().len(), 6);
    assert!(r.mean_mbit().unwrap() > 13.0);
    assert_eq!(r.received_bytes, Some(1000.0));
    assert!(iperf(r#"{"error":"unable to connect"}"#).is_err());
}

mod helpers {
    use crate::parse::helpers::{churn_dir, nft_share, slowest_close_ms};

    #[test]
    fn nft_share_counts_the_netfilter_socket() {
        let trace = "\
1234  sendmsg(3<NETLINK:[NETFILTER:5678]>, ...) = 120 <0.000200>
1234  recvmsg(3<NETLINK:[NETFILTER:5678]>, ...) = 40 <0.000100>
1234  openat(AT_FDCWD, \"/x\", O_RDONLY) = 4 <0.000700>
1234  +++ exited with 0 +++";
        let (nft, all, calls) = nft_share(trace);
        assert!((nft - 0.3).abs() < 1e-9 && (all - 1.0).abs() < 1e-9);
        assert_eq!(calls, 2);
    }

    #[test]
    fn slowest_close() {
        let t = "close(3) = 0 <0.000010>\nclose(4<NETLINK>) = 0 <0.008912>\nwrite(1, \"\", 0) = 0 <0.5>";
        assert!((slowest_close_ms(t).unwrap() - 8.912).abs() < 1e-9);
        assert_eq!(slowest_close_ms(""), None);
    }

    #[test]
    fn churn_runs_in_the_helpers_order() {
        let dir = std::env::temp_dir().join(format!("bench-report-churn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (stem, calls) in [
            ("reference-ifb-16", "3000000\n1000000\n"),
            ("ours-pod-16", "1000000\n"),
            ("ours-ifb-16", "2000000\n"),
            ("ours-ifb-4", "1000000\n"),
        ] {
            for verb in ["ADD", "DEL"] {
                std::fs::write(dir.join(format!("{stem}-{verb}.calls")), calls).unwrap();
                std::fs::write(
                    dir.join(format!("{stem}-{verb}.wall")),
                    "1000000000 1005000000\n",
                )
                .unwrap();
            }
        }
        let runs = churn_dir(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let order: Vec<String> = runs
            .iter()
            .map(|r| format!("{} {} {}", r.who, r.mode, r.n))
            .collect();
        assert_eq!(
            order,
            [
                "ours ifb 4",
                "ours ifb 16",
                "ours pod 16",
                "reference ifb 16"
            ]
        );
        let del = runs[3].del.as_ref().unwrap();
        // 5 ms of wall time; the calls' median is the mean of 1 and 3 ms
        assert_eq!(
            (del.wall_ms, del.calls_ms.median, del.calls_ms.p99),
            (5.0, 2.0, 3.0)
        );
    }
}
