//! Secrets bound to their practice and purpose by the KMS encryption context, against the real
//! emulator's KMS (moto): a sealed secret opens only under the context it was sealed with, and
//! a practice whose secrets were sealed before contexts existed is refused (no fallback) until
//! `pil secret reseal` binds them, after which it works with the same secrets.

use shared::ids::PracticeId;
use shared::ports::{KeyService, PracticeRepo, SecretContext};
use shared::practice::SecretKind;
use shared::service::admin;
use tests::{TestStack, completed, new_ref};

/// The stack's KMS key service (the adapter the functions use) and the raw KMS client.
fn kms(ts: &TestStack) -> (&dyn KeyService, aws_sdk_kms::Client, String) {
    let keys = ts.stack.scan_deps().unwrap().adapters.secrets.keys();
    let key_id = ts
        .stack
        .env
        .iter()
        .find(|(k, _)| k == "KMS_KEY_ID")
        .map(|(_, v)| v.clone())
        .expect("KMS_KEY_ID");
    (keys, ts.stack.clients.kms.clone(), key_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_opens_a_sealed_secret_only_under_its_own_context() {
    let ts = TestStack::start().await.unwrap();
    let (keys, raw, key_id) = kms(&ts);
    let here = ts.practice.clone();
    let other = PracticeId::parse("other-clinic").unwrap();
    let sealed = keys
        .seal(
            &SecretContext::for_link(&here),
            b"a link key of 32 bytes, say......",
        )
        .await
        .unwrap();
    assert_eq!(
        keys.open(&SecretContext::for_link(&here), &sealed)
            .await
            .unwrap(),
        b"a link key of 32 bytes, say......"
    );
    // Another purpose, another practice, or no context: KMS refuses.
    for wrong in [
        SecretContext::for_webhook(&here),
        SecretContext::for_trigger(&here),
        SecretContext::for_link(&other),
    ] {
        assert!(
            keys.open(&wrong, &sealed).await.is_err(),
            "opened under {wrong:?}"
        );
    }
    assert!(keys.open_unbound(&sealed).await.is_err());
    // And the context is really KMS's: the raw Decrypt fails without it, or with another.
    let blob = aws_sdk_kms::primitives::Blob::new(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &sealed).unwrap(),
    );
    let plain = |ctx: &[(&str, &str)]| {
        let mut req = raw.decrypt().key_id(&key_id).ciphertext_blob(blob.clone());
        for (k, v) in ctx {
            req = req.encryption_context(*k, *v);
        }
        req.send()
    };
    assert!(plain(&[]).await.is_err());
    assert!(
        plain(&[("practice", here.as_str()), ("purpose", "webhook")])
            .await
            .is_err()
    );
    assert!(
        plain(&[("practice", here.as_str()), ("purpose", "link")])
            .await
            .is_ok()
    );

    // A value sealed without a context (as before contexts) opens only unbound.
    let legacy = raw
        .encrypt()
        .key_id(&key_id)
        .plaintext(aws_sdk_kms::primitives::Blob::new(b"whsec_legacy"))
        .send()
        .await
        .unwrap();
    let legacy = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        legacy.ciphertext_blob.unwrap().as_ref(),
    );
    assert!(
        keys.open(&SecretContext::for_webhook(&here), &legacy)
            .await
            .is_err()
    );
    assert_eq!(keys.open_unbound(&legacy).await.unwrap(), b"whsec_legacy");
    ts.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_practice_sealed_before_contexts_is_refused_until_resealed_then_works_unchanged() {
    let ts = TestStack::start().await.unwrap();
    let (keys, raw, key_id) = kms(&ts);
    let mut p = ts
        .store()
        .get_practice(&ts.practice)
        .await
        .unwrap()
        .unwrap();
    // Re-seal every secret without a context: what a record written before contexts holds.
    let unbind = |kind: SecretKind, sealed: String| {
        let (raw, key_id, practice) = (raw.clone(), key_id.clone(), ts.practice.clone());
        async move {
            let plain = keys
                .open(&SecretContext::for_any(&practice, kind), &sealed)
                .await
                .unwrap();
            let out = raw
                .encrypt()
                .key_id(&key_id)
                .plaintext(aws_sdk_kms::primitives::Blob::new(plain))
                .send()
                .await
                .unwrap();
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                out.ciphertext_blob.unwrap().as_ref(),
            )
        }
    };
    p.secrets.webhook = vec![unbind(SecretKind::Webhook, p.secrets.webhook[0].clone()).await];
    p.secrets.trigger = unbind(SecretKind::Trigger, p.secrets.trigger.clone()).await;
    p.secrets.link = unbind(SecretKind::Link, p.secrets.link.clone()).await;
    // Nor had it a tombstone key: the reseal gives it one.
    p.secrets.tombstone = None;
    let expected = p.version;
    p.version += 1;
    ts.store().put_practice(&p, Some(expected)).await.unwrap();

    // No fallback: the receiver cannot open the webhook secret, so the PMS is told to retry.
    let patient = new_ref("p");
    let r = ts
        .send("msg_legacy_1", &completed(&patient, "neurotoxin", 100))
        .await;
    assert_eq!(r.status, 503, "{r:?}");

    let out = admin::reseal_secrets(ts.store(), keys, &ts.practice, jiff::Timestamp::now())
        .await
        .unwrap();
    assert_eq!((out.resealed, out.already_bound), (4, 0));
    // The same webhook secret the PMS holds now verifies again: the retry lands.
    let r = ts
        .send("msg_legacy_1", &completed(&patient, "neurotoxin", 100))
        .await;
    assert_eq!(r.status, 202, "{r:?}");
    let again = admin::reseal_secrets(ts.store(), keys, &ts.practice, jiff::Timestamp::now())
        .await
        .unwrap();
    assert_eq!((again.resealed, again.already_bound), (0, 4));
    ts.stop().await;
}
