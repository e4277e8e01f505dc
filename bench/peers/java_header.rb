version=2
# liblognorm rulebase for the W7 rsyslog peer (mmnormalize): the header of a java event,
# `2024-11-22 10:00:00,035 INFO  [main] com.example.Foo - text`; `text` takes the rest of
# the event, continuation lines included.
rule=:%date:word% %clock:char-to{"extradata":","}%,%millis:number% %level:word%%-:whitespace%[%thread:char-to{"extradata":"]"}%] %logger:word% - %text:rest%
