/*-------------------------------------------------------------------------
 *
 * maileroo_citus.c
 *		What maileroo needs to know about a Citus cluster it runs in.
 *
 * On Citus the outbox and its delivery worker live on the coordinator
 * only: CREATE EXTENSION maileroo on the coordinator is propagated to every
 * worker node, and a worker node must neither deliver mail (it has no key
 * and its outbox is a local table nobody reads) nor accept mail to queue.
 *
 * A node is a Citus worker node when the citus extension is installed in
 * this database and the node's group id (pg_dist_local_group) is not 0:
 * the coordinator, and a server with Citus that is not part of a cluster,
 * have group 0; citus_add_node gives each worker a group of its own.  The
 * catalog is read, not a function of Citus called, so nothing here depends
 * on the citus library being loaded or on its version.
 *
 * DROP EXTENSION on a cluster where maileroo_distribute has run needs help
 * from the coordinator: see maileroo_citus_drop_extension.
 *
 * src/maileroo_citus.c
 *
 *-------------------------------------------------------------------------
 */
#include "maileroo.h"

#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "nodes/parsenodes.h"

/*
 * True when this database is on a Citus worker node.  Must be called inside
 * a transaction; connects to SPI for its own query (nesting is fine).
 */
bool
maileroo_citus_worker_node(void)
{
	bool		worker = false;

	if (!OidIsValid(get_extension_oid("citus", true)))
		return false;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT groupid FROM pg_catalog.pg_dist_local_group",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[0],
									  SPI_tuptable->tupdesc, 1, &isnull);

		worker = !isnull && DatumGetInt32(d) != 0;
	}
	SPI_finish();
	return worker;
}

/*
 * maileroo_citus_worker_node() RETURNS boolean, for the SQL side
 * (maileroo_distribute refuses to run on a worker node).
 */
PG_FUNCTION_INFO_V1(maileroo_citus_is_worker_node);

Datum
maileroo_citus_is_worker_node(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(maileroo_citus_worker_node());
}

/*
 * Event trigger (ddl_command_start) that makes DROP EXTENSION maileroo work
 * once maileroo_distribute has run.  Citus drops the shards of a dropped
 * distributed table from its own sql_drop trigger, but not for tables an
 * extension owns: the DROP EXTENSION it propagates to the workers has
 * already dropped their shell tables, a partition's metadata is found gone
 * there ("relation ... is not distributed") and the command fails, or the
 * shards are left behind.  So before the extension goes, the coordinator
 * detaches the partitions of the extension's distributed tables and drops
 * their shards itself, in the same transaction (Citus commits it on every
 * node with two-phase commit, so a DROP EXTENSION that fails later keeps
 * everything).  Nothing happens for other extensions, on a server without
 * Citus, or on a worker node (the coordinator does it for the cluster).
 */
PG_FUNCTION_INFO_V1(maileroo_citus_drop_extension);

Datum
maileroo_citus_drop_extension(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	DropStmt   *stmt;
	ListCell   *lc;
	bool		ours = false;
	Oid			ext;
	StringInfoData sql;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		elog(ERROR, "maileroo_citus_drop_extension must be fired as an event trigger");
	trigdata = (EventTriggerData *) fcinfo->context;
	if (!IsA(trigdata->parsetree, DropStmt))
		PG_RETURN_NULL();
	stmt = (DropStmt *) trigdata->parsetree;
	if (stmt->removeType != OBJECT_EXTENSION)
		PG_RETURN_NULL();
	foreach(lc, stmt->objects)
	{
		Node	   *name = lfirst(lc);

		if (IsA(name, String) && strcmp(strVal(name), "maileroo") == 0)
			ours = true;
	}
	ext = get_extension_oid("maileroo", true);
	if (!ours || !OidIsValid(ext) || !OidIsValid(get_extension_oid("citus", true)) ||
		maileroo_citus_worker_node())
		PG_RETURN_NULL();

	/* The Citus tables that belong to the extension, partitions first. */
	initStringInfo(&sql);
	appendStringInfo(&sql,
					 "DO $mr$ DECLARE r record; BEGIN"
					 " IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition p"
					 "   JOIN pg_catalog.pg_depend d ON d.objid OPERATOR(pg_catalog.=) p.logicalrelid"
					 "  WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
					 "    AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
					 "    AND d.refobjid OPERATOR(pg_catalog.=) %u AND d.deptype OPERATOR(pg_catalog.=) 'e') THEN RETURN; END IF;"
					 " PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);"
					 " FOR r IN SELECT i.inhparent::pg_catalog.regclass AS parent, i.inhrelid::pg_catalog.regclass AS child"
					 "   FROM pg_catalog.pg_inherits i"
					 "   JOIN pg_catalog.pg_dist_partition p ON p.logicalrelid OPERATOR(pg_catalog.=) i.inhrelid"
					 "   JOIN pg_catalog.pg_depend d ON d.objid OPERATOR(pg_catalog.=) i.inhrelid"
					 "  WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
					 "    AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
					 "    AND d.refobjid OPERATOR(pg_catalog.=) %u AND d.deptype OPERATOR(pg_catalog.=) 'e'"
					 " LOOP"
					 "   EXECUTE pg_catalog.format('ALTER TABLE %%s DETACH PARTITION %%s', r.parent, r.child);"
					 " END LOOP;"
					 " FOR r IN SELECT p.logicalrelid, n.nspname, c.relname"
					 "   FROM pg_catalog.pg_dist_partition p"
					 "   JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) p.logicalrelid"
					 "   JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace"
					 "   JOIN pg_catalog.pg_depend d ON d.objid OPERATOR(pg_catalog.=) p.logicalrelid"
					 "  WHERE d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass"
					 "    AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass"
					 "    AND d.refobjid OPERATOR(pg_catalog.=) %u AND d.deptype OPERATOR(pg_catalog.=) 'e'"
					 " LOOP"
					 "   PERFORM pg_catalog.citus_drop_all_shards(r.logicalrelid, r.nspname, r.relname, false);"
					 " END LOOP;"
					 " END $mr$",
					 ext, ext, ext);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute(sql.data, false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not release the distributed tables of maileroo");
	SPI_finish();
	pfree(sql.data);
	PG_RETURN_NULL();
}
