//! Why an envelope was refused, as operators read it: the router's reasons (the dead-letter
//! queue's `x-fedq-reason-code`, the `dead_letters` table, the API's dead letters and the
//! `fedq_refused_envelopes_total{reason}` counter) and a node's (its log and
//! `fedq_node_refused_envelopes_total{reason}`). `docs/operations.md` tables exactly these (the
//! tests below hold it to them).

stable_codes! {
    /// Why the router refused an envelope. The time and signature checks share their codes with
    /// the envelope's own open errors (`fedq_envelope::OpenError::code`), so the router and a
    /// node name the same failure alike.
    RouterRefusal {
        /// The bytes do not parse as an envelope.
        Malformed = "malformed",
        /// Larger than `[router] max_envelope_bytes`.
        TooLarge = "too_large",
        /// Published without a validated AMQP user id.
        MissingUserId = "missing_user_id",
        /// The publishing broker user is not a registered, unrevoked node.
        UnknownPublisher = "unknown_publisher",
        /// The header's sender is not the publishing node's organization.
        PublisherMismatch = "publisher_mismatch",
        /// The server has no task with the header's task id.
        UnknownTask = "unknown_task",
        /// The task belongs to another collaboration than the header says.
        WrongCollaboration = "wrong_collaboration",
        /// The task belongs to another run than the header says.
        WrongRun = "wrong_run",
        /// The sender or the recipient is not a member of the collaboration.
        NotAMember = "not_a_member",
        /// This kind may not travel from this sender to this recipient.
        Direction = "direction",
        /// The job status in the header does not fit the kind.
        BadStatus = "bad_status",
        /// The lifetime is not positive or too long.
        BadLifetime = "bad_lifetime",
        /// Past `expires_at`, beyond the clock skew.
        Expired = "expired",
        /// Created in the future, beyond the clock skew.
        NotYetValid = "not_yet_valid",
        /// The signing key is not the sender's, or was retired before the envelope was created.
        UnknownSenderKey = "unknown_sender_key",
        /// The signature does not verify with the sender's key.
        BadSignature = "bad_signature",
        /// The publishing node is past its rate; refused before it was parsed.
        RateLimited = "rate_limited",
        /// Routing failed too often for another reason than a database outage.
        Undeliverable = "undeliverable",
    }
}

stable_codes! {
    /// Why a node refused an envelope that opened (signed by a trusted key, sealed to it) but
    /// asks for what its sender may not do. Envelopes that do not open are refused with the
    /// envelope's own open-error codes instead.
    NodeRefusal {
        /// A `job_start` reusing a job id that came first with another task.
        JobOfAnotherTask = "job_of_another_task",
        /// A run message whose `from_job` is not a job of its sender in that task.
        FromJobOfAnother = "from_job_of_another",
        /// A run message past the run's inbox quota (`limits.run_inbox_messages`, `run_inbox_mib`).
        RunInboxFull = "run_inbox_full",
        /// A subtask's result for a job that its signed sender does not run.
        ResultForAnotherJob = "result_for_another_job",
        /// A secure-sum message (a run key or a masked contribution) that does not read.
        SecureSumMalformed = "secure_sum_malformed",
        /// A second, different secure-sum run key, or contribution to a round, from the same
        /// organization: the first stays.
        SecureSumAgain = "secure_sum_again",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backquoted codes in the first column of the table that follows `heading` in `doc`.
    fn table_codes(doc: &str, heading: &str) -> Vec<String> {
        let start = doc.find(heading).unwrap_or_else(|| panic!("no {heading:?} in the document"));
        doc[start..]
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .flat_map(|row| {
                let first = row.split('|').nth(1).unwrap_or("");
                first.split('`').skip(1).step_by(2).map(str::to_owned).collect::<Vec<_>>()
            })
            .collect()
    }

    const OPERATIONS: &str = include_str!("../../../../docs/operations.md");

    #[test]
    fn the_operations_guide_tables_exactly_the_routers_reasons() {
        assert_eq!(
            table_codes(OPERATIONS, "The router's reason codes"),
            RouterRefusal::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_operations_guide_tables_exactly_the_nodes_reasons() {
        assert_eq!(
            table_codes(OPERATIONS, "A node's reason codes"),
            NodeRefusal::ALL.iter().map(|c| c.as_str()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn every_code_reads_back_from_its_text() {
        for code in RouterRefusal::ALL {
            assert_eq!(RouterRefusal::parse(code.as_str()), Some(*code));
        }
        for code in NodeRefusal::ALL {
            assert_eq!(NodeRefusal::parse(code.as_str()), Some(*code));
        }
        assert_eq!(RouterRefusal::parse("a_reason_from_the_future"), None);
    }
}
