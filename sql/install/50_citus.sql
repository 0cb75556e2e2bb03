
-- ---------------------------------------------------------------------
-- Scaling out with Citus
-- ---------------------------------------------------------------------
--
-- maileroo_distribute() turns a single-node install into a distributed
-- one on a Citus coordinator: the event tables are hash-distributed on
-- message_reference_id, so that every event of one message lives on one
-- shard (per-message analytics join and group without moving rows), and
-- everything that belongs to sending stays on the coordinator, where the
-- one delivery worker runs.  On a worker node the delivery worker leaves
-- and maileroo_send refuses to queue (src/maileroo_citus.c).

CREATE FUNCTION maileroo_citus_worker_node()
RETURNS boolean
AS 'MODULE_PATHNAME', 'maileroo_citus_is_worker_node'
LANGUAGE C STABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION maileroo_citus_worker_node() IS
	'True on a Citus worker node (citus installed and the node''s group is not the coordinator''s)';

CREATE FUNCTION maileroo_distribute(shard_count integer DEFAULT NULL)
RETURNS TABLE (relation regclass, placement text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	events regclass := '@extschema@.maileroo_events'::regclass;
	triggers text;
	missing bigint;
BEGIN
	IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'citus') THEN
		RAISE EXCEPTION 'citus is not installed in this database'
			USING ERRCODE = 'object_not_in_prerequisite_state',
				  HINT = 'Preload it (shared_preload_libraries = ''citus,maileroo''), CREATE EXTENSION citus and add the worker nodes, then call maileroo_distribute() on the coordinator.';
	END IF;
	IF @extschema@.maileroo_citus_worker_node() THEN
		RAISE EXCEPTION 'maileroo_distribute() must be called on the Citus coordinator'
			USING ERRCODE = 'object_not_in_prerequisite_state';
	END IF;
	IF shard_count IS NOT NULL AND shard_count < 1 THEN
		RAISE EXCEPTION 'shard_count must be at least 1'
			USING ERRCODE = 'invalid_parameter_value';
	END IF;

	IF NOT EXISTS (SELECT FROM pg_dist_partition WHERE logicalrelid = events) THEN
		-- Citus refuses triggers on distributed tables.
		SELECT string_agg(format('%I on %s', t.tgname, t.tgrelid::regclass), ', ' ORDER BY 1)
		  INTO triggers
		  FROM pg_trigger t
		 WHERE NOT t.tgisinternal
		   AND t.tgrelid IN (SELECT relid FROM pg_partition_tree(events));
		IF triggers IS NOT NULL THEN
			RAISE EXCEPTION 'maileroo_events cannot be distributed while it has triggers'
				USING ERRCODE = 'object_not_in_prerequisite_state',
					  DETAIL = format('Citus does not support triggers on distributed tables; found: %s.', triggers);
		END IF;

		-- The distribution column must be in the primary key, and Citus
		-- refuses rows whose distribution column is NULL.
		SELECT count(*) INTO missing
		  FROM @extschema@.maileroo_events e WHERE e.message_reference_id IS NULL;
		IF missing > 0 THEN
			RAISE EXCEPTION 'maileroo_events holds % events without a message_reference_id', missing
				USING ERRCODE = 'not_null_violation',
					  DETAIL = 'Events are distributed on message_reference_id, which may not be NULL on a distributed table.',
					  HINT = 'Delete them, or give them a reference id, then call maileroo_distribute() again.';
		END IF;
		ALTER TABLE @extschema@.maileroo_events
			DROP CONSTRAINT maileroo_events_pkey,
			ALTER COLUMN message_reference_id SET NOT NULL,
			ADD CONSTRAINT maileroo_events_pkey PRIMARY KEY (event_id, event_type, message_reference_id);

		PERFORM create_distributed_table(events, 'message_reference_id',
										 shard_count => shard_count);
		-- The rows now live in the shards; drop the coordinator's copy.
		PERFORM truncate_local_data_after_distributing_table(p.relid)
		   FROM pg_partition_tree(events) p
		  WHERE p.isleaf;
	END IF;

	RETURN QUERY
	SELECT p.relid::regclass, 'distributed on message_reference_id'
	  FROM pg_partition_tree(events) p
	UNION ALL
	SELECT r, 'local to the coordinator'
	  FROM unnest(ARRAY['@extschema@.maileroo_outbox'::regclass,
						'@extschema@.maileroo_suppressions'::regclass,
						'@extschema@.maileroo_rejected_events'::regclass]) AS r;
END
$$;
COMMENT ON FUNCTION maileroo_distribute(integer) IS
	'On a Citus coordinator: distribute the event tables on message_reference_id; the outbox, suppressions and rejected events stay on the coordinator';
REVOKE ALL ON FUNCTION maileroo_distribute(integer) FROM PUBLIC;

CREATE FUNCTION maileroo_citus_drop_extension()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'maileroo_citus_drop_extension'
LANGUAGE C;
COMMENT ON FUNCTION maileroo_citus_drop_extension() IS
	'Event trigger: before DROP EXTENSION maileroo on a Citus coordinator, drop the shards of its distributed tables';
REVOKE ALL ON FUNCTION maileroo_citus_drop_extension() FROM PUBLIC;

CREATE EVENT TRIGGER maileroo_citus_drop_extension ON ddl_command_start
	WHEN TAG IN ('DROP EXTENSION')
	EXECUTE FUNCTION maileroo_citus_drop_extension();
