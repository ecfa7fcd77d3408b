"""Parquet reader (datatrove's) that streams record batches and counts an unreadable file as an error instead of
ending the task. Memory holds one batch, not the whole table; rows before a corrupt batch are kept."""

from __future__ import annotations

from datatrove.pipeline.readers.parquet import ParquetReader

from data_pipeline.sources.accounting import ReaderAccounting

BATCH_ROWS = 1024


class ParquetSource(ReaderAccounting, ParquetReader):
    name = "📒 Parquet (accounted)"

    def read_file(self, filepath: str):
        import pyarrow
        import pyarrow.parquet

        row_no = 0
        try:
            with self.data_folder.open(filepath, "rb") as f:
                for batch in pyarrow.parquet.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS):
                    for row in batch.to_pylist():
                        self.count_in(len(str(row.get(self.text_key, "")).encode()))
                        document = self.document_from_row(row, filepath, row_no)
                        row_no += 1
                        if document is not None:
                            yield document
        except (OSError, pyarrow.ArrowException) as exc:
            from datatrove.utils.logging import logger

            self.count_in(0)
            self.count_error("unreadable_parquet_file")
            logger.warning(f"{filepath}: {type(exc).__name__}: {exc} after row {row_no}; counted as an error")
