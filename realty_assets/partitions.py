"""One dynamic partition per batch delivered by the data API (key: ``g<group>-<day>-b<nnn>``)."""

import dagster as dg

batch_partitions = dg.DynamicPartitionsDefinition(name="batches")
