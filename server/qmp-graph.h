/* server/qmp-graph.h: QMP command handlers on nodes and the graph. */
#ifndef NG_QMP_GRAPH_H
#define NG_QMP_GRAPH_H

#include "server/control.h"

ng_qmp_handler ng_qmp_query_version;
ng_qmp_handler ng_qmp_query_commands;
ng_qmp_handler ng_qmp_query_named_block_nodes;
ng_qmp_handler ng_qmp_query_graph;
ng_qmp_handler ng_qmp_blockdev_add;
ng_qmp_handler ng_qmp_blockdev_del;
ng_qmp_handler ng_qmp_blockdev_insert_filter;
ng_qmp_handler ng_qmp_blockdev_remove_filter;
ng_qmp_handler ng_qmp_blockdev_reconfigure;
ng_qmp_handler ng_qmp_throttle_group_add;
ng_qmp_handler ng_qmp_throttle_group_set;
ng_qmp_handler ng_qmp_throttle_group_del;

/* server/qmp-export.c */
ng_qmp_handler ng_qmp_query_block_exports;
ng_qmp_handler ng_qmp_block_export_add;
ng_qmp_handler ng_qmp_block_export_del;
ng_qmp_handler ng_qmp_query_nac;

#endif
