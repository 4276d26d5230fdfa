"""What travels between the roles: wire types, their Avro codec and schema store, topic
names, consumer group names and the validation of notices."""
