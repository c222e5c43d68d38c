"""Operations on outputs that are neither a run nor a query: integrity checks and repair."""
