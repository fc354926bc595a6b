// Generated from graph_schema (python -m graph_schema). Do not edit by hand.
CREATE CONSTRAINT user_id_unique IF NOT EXISTS FOR (n:User) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT item_id_unique IF NOT EXISTS FOR (n:Item) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT brand_id_unique IF NOT EXISTS FOR (n:Brand) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT category_id_unique IF NOT EXISTS FOR (n:Category) REQUIRE n.id IS UNIQUE;
CREATE INDEX item_title IF NOT EXISTS FOR (n:Item) ON (n.title);
CREATE INDEX brand_name IF NOT EXISTS FOR (n:Brand) ON (n.name);
CREATE INDEX category_name IF NOT EXISTS FOR (n:Category) ON (n.name);
