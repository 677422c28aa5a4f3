//! Random reconciliations against the real server: checks that the model of
//! server behaviour used by the unit-level convergence property holds for an
//! independent SCIM implementation.

mod common;

use std::cell::Cell;

use common::ScimServer;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tenure_scim::{diff, Capabilities, Desired, UserSpec};

fn text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[aBc]{1,3}"]
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

fn any_spec() -> impl Strategy<Value = UserSpec> {
    (
        "[aAbB]{1,3}",
        (text(), text(), text(), text(), text()),
        any::<bool>(),
        (opt_text(), opt_text(), opt_text()),
        (opt_text(), opt_text(), opt_text(), opt_text()),
    )
        .prop_map(
            |(
                user_name,
                (external_id, given_name, family_name, display_name, email),
                active,
                (title, department, employee_number),
                (cost_center, organization, division, manager),
            )| UserSpec {
                user_name,
                external_id,
                given_name,
                family_name,
                display_name,
                email,
                active,
                title,
                department,
                employee_number,
                cost_center,
                organization,
                division,
                manager,
                ..UserSpec::default()
            },
        )
}

fn any_desired() -> impl Strategy<Value = Desired> {
    prop_oneof![
        3 => any_spec().prop_map(Desired::Present),
        1 => Just(Desired::Deactivated),
        1 => Just(Desired::Deleted),
    ]
}

#[test]
fn random_reconciles_converge_on_the_server() {
    let server = ScimServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = Cell::new(0u32);
    let strategy = (prop::option::of(any_spec()), any_desired(), any::<bool>());
    let result = runner.run(&strategy, |(initial, desired, patch)| {
        cases.set(cases.get() + 1);
        // A fresh tenant per case, so userName uniqueness never interferes.
        let client = server.client();
        let caps = Capabilities {
            patch,
            ..Capabilities::default()
        };
        rt.block_on(async {
            let mut remote = None;
            if let Some(initial) = &initial {
                remote = Some(client.create_user(initial).await.expect("seed").value);
            }
            let mut id = remote.as_ref().map(|u| u.id.clone());
            for op in diff(&desired, remote.as_ref(), caps) {
                let done = client.execute(&op).await.expect("execute");
                if let Some(user) = done.value {
                    id = Some(user.id);
                }
            }
            let after = match &id {
                Some(id) => client.get_user(id).await.expect("refetch").value,
                None => None,
            };
            let left = diff(&desired, after.as_ref(), caps);
            prop_assert!(
                left.is_empty(),
                "not converged: {:?}\nremote after: {:?}",
                left,
                after
            );
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(cases.get() >= 48);
}
