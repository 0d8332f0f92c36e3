//! The test kit's real servers answer as the other tests expect.

use slowpoke_testkit::{KeepAlive, Nginx, NginxMemcached, get_once, haproxy, is_stopped};

#[test]
fn nginx_memcached_app_serves_the_cached_item_over_keep_alive() {
    let app = NginxMemcached::start(1);
    let mut client = KeepAlive::connect(app.nginx.port);
    for _ in 0..10 {
        assert_eq!(client.get("/item"), 200);
    }
    assert!(
        client.received > 10 * 1024,
        "the 1 KiB item came back each time"
    );
}

#[test]
fn haproxy_forwards_to_nginx() {
    let nginx = Nginx::default().start();
    let proxy = haproxy(nginx.port);
    let (status, _, received) = get_once(proxy.port, "/hello.txt");
    assert_eq!(status, 200);
    assert!(received > slowpoke_testkit::BODY.len() as u64);
}

#[test]
fn prefork_nginx_has_its_workers_and_none_is_stopped() {
    let nginx = Nginx {
        workers: 2,
        ..Nginx::default()
    }
    .start();
    let pids = nginx.pids();
    assert_eq!(pids.len(), 3, "master + 2 workers: {pids:?}");
    assert!(pids.iter().all(|&p| !is_stopped(p)));
}

#[test]
fn php_fanout_answers_with_every_leafs_answer() {
    let app = slowpoke_testkit::php::PhpFanout {
        workers: 4,
        front_us: 100.0,
        leaf_us: 200.0,
        leaves: 3,
    }
    .start();
    for pids in
        std::iter::once(app.front.pids()).chain(app.leaves.iter().map(slowpoke_testkit::Proc::pids))
    {
        assert_eq!(
            pids.len(),
            5,
            "an apache2 parent and 4 prefork children: {pids:?}"
        );
    }
    let mut client = KeepAlive::connect(app.front.port);
    for _ in 0..20 {
        assert_eq!(
            client.get("/front.php"),
            200,
            "the front and its 3 leaves answered"
        );
    }
    // 20 answers of 3 leaves x 200 bytes, plus headers.
    assert!(client.received > 20 * 600, "{} bytes", client.received);
    assert!(app.entry.ends_with("/front.php"), "{}", app.entry);
}
