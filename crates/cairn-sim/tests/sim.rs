//! The simulator's behaviour at a small scale (fast enough for every test run).

use cairn_core::repair::{RepairPolicy, Threshold};
use cairn_sim::{Churn, Config, run};

fn quiet() -> Churn {
    Churn {
        departures_per_month: 0.0,
        offline_sessions_per_day: 0.0,
        offline_hours: 1.0,
        subnet_losses_per_year: 0.0,
        zone_outages_per_year: 0.0,
        zone_outage_hours: 1.0,
        dropper_share: 0.0,
    }
}

fn small(churn: Churn) -> Config {
    Config {
        nodes: 300,
        days: 90,
        seed: 11,
        objects: 300,
        k: 8,
        n: 12,
        churn,
        ..Config::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let cfg = small(Churn::realistic());
    let a = run(&cfg).unwrap();
    let b = run(&cfg).unwrap();
    assert_eq!(a, b);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
    let c = run(&Config { seed: 12, ..cfg }).unwrap();
    assert_ne!(a.repairs, 0);
    assert_ne!(a, c, "another seed must give another run");
}

#[test]
fn a_quiet_network_needs_no_repair() {
    let r = run(&small(quiet())).unwrap();
    assert_eq!(r.repairs, 0);
    assert_eq!(r.objects_lost, 0);
    assert_eq!(r.segments_below_k, 0);
    assert_eq!(r.departures, 0);
    assert_eq!(r.expansion, 1.5);
}

#[test]
fn repair_keeps_objects_alive_that_are_lost_without_it() {
    // 30 % of nodes leave every month: over 90 days a segment of 12 pieces
    // that needs 8 loses far more than 4 unless it is repaired.
    let churn = Churn {
        departures_per_month: 0.3,
        ..quiet()
    };
    let repaired = run(&small(churn.clone())).unwrap();
    assert!(repaired.repairs > 100, "{repaired:?}");
    assert_eq!(repaired.objects_lost, 0, "{repaired:?}");
    assert!(repaired.repair_traffic_pct_per_month > 0.0);
    // Repair throttled to almost nothing: objects die.
    let starved = run(&Config {
        repair_bytes_per_sec_per_node: 0,
        ..small(churn)
    })
    .unwrap();
    assert!(starved.objects_lost > 0, "{starved:?}");
}

#[test]
fn audits_catch_silent_droppers_and_spare_honest_nodes() {
    let churn = Churn {
        dropper_share: 0.05,
        ..quiet()
    };
    let r = run(&Config {
        days: 120,
        ..small(churn)
    })
    .unwrap();
    assert!(r.droppers > 0);
    // Droppers drop at a random moment in the run; those that dropped early
    // enough to be audited a few times are caught.
    assert!(r.droppers_disqualified > 0, "{r:?}");
    assert_eq!(r.honest_disqualified, 0, "{r:?}");
    assert_eq!(r.objects_lost, 0, "{r:?}");
    assert!(r.repairs > 0);
}

#[test]
fn eager_repair_moves_more_bytes_than_lazy_repair() {
    let churn = Churn {
        departures_per_month: 0.1,
        ..quiet()
    };
    let lazy = run(&small(churn.clone())).unwrap();
    let eager = run(&Config {
        repair: RepairPolicy {
            threshold: Threshold::Eager,
        },
        ..small(churn)
    })
    .unwrap();
    assert!(
        eager.repair_traffic_pct_per_month > lazy.repair_traffic_pct_per_month,
        "eager {} lazy {}",
        eager.repair_traffic_pct_per_month,
        lazy.repair_traffic_pct_per_month
    );
}

#[test]
fn impossible_configurations_are_refused() {
    assert!(
        run(&Config {
            nodes: 10,
            ..small(quiet())
        })
        .is_err()
    );
    assert!(
        run(&Config {
            k: 13,
            ..small(quiet())
        })
        .is_err()
    );
    assert!(
        run(&Config {
            zones: 11,
            ..small(quiet())
        })
        .is_err()
    );
}
