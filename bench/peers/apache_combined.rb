version=2
# liblognorm rulebase for the W2/W3 rsyslog peer (mmnormalize): Apache combined.
rule=:%client:word% %ident:word% %user:word% [%time:char-to{"extradata":"]"}%] "%method:word% %path:word% %protocol:char-to{"extradata":"\""}%" %status:number{"format":"number"}% %bytes:word% "%referer:char-to{"extradata":"\""}%" "%agent:char-to{"extradata":"\""}%"
