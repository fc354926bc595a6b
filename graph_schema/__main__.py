"""``python -m graph_schema`` rewrites graph_schema/neo4j.cypher from the schema."""
from pathlib import Path

from graph_schema.ddl import neo4j_ddl_text

if __name__ == "__main__":
    path = Path(__file__).with_name("neo4j.cypher")
    path.write_text(neo4j_ddl_text(), encoding="utf-8")
    print(f"wrote {path}")
