"""Parquet reader (datatrove's) that counts an unreadable file as an error instead of ending the task."""

from __future__ import annotations

from datatrove.pipeline.readers.parquet import ParquetReader

from data_pipeline.sources.accounting import ReaderAccounting


class ParquetSource(ReaderAccounting, ParquetReader):
    name = "📒 Parquet (accounted)"

    def read_file(self, filepath: str):
        import pyarrow

        try:
            with self.data_folder.open(filepath, "rb") as f:
                table = pyarrow.parquet.read_table(f)
        except (OSError, pyarrow.ArrowException) as exc:
            from datatrove.utils.logging import logger

            self.count_in(0)
            self.count_error("unreadable_parquet_file")
            logger.warning(f"{filepath}: {type(exc).__name__}: {exc}; counted as an error")
            return
        for row_no, row in enumerate(table.to_pylist()):
            self.count_in(len(str(row.get(self.text_key, "")).encode()))
            document = self.document_from_row(row, filepath, row_no)
            if document is not None:
                yield document
