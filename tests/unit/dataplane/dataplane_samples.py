"""Output captured from HAProxy 2.6.12 (Debian 12) while the data plane ran a unit "web"."""

SHOW_STAT_HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,"
    "ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,"
    "conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,"
    "srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,"
    "used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,"
    "agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,"
    "h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,"
    "h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,"
    "h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,"
    "h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,"
    "h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,"
)
SHOW_STAT = (
    SHOW_STAT_HEADER
    + "\nbe.web,a,0,0,3,5,,40,0,0,,0,,0,0,0,0,UP,100,1,0,0,0,1,0,,1,3,1,,0,,2,0,,0,L7OK,200,2,"
    "0,0,0,0,0,0,,,,37,0,0,,,,,-1,,,0,0,0,0,,,,Layer7 check passed,,2,2,3,,,,127.0.0.3:25001,,"
    "http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,100,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,"
    "\nbe.web,b,2,2,0,0,,0,0,0,,0,,0,0,0,0,DRAIN,0,1,0,0,0,1,0,,1,3,2,,0,,2,0,,0,L7OK,200,2,"
    "0,0,0,0,0,0,,,,0,0,0,,,,,-1,,,0,0,0,0,,,,Layer7 check passed,,2,2,3,,,,127.0.0.3:25002,,"
    "http,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,0,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,"
)
SERVERS_STATE = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 be.web 1 a 127.0.0.3 2 0 100 100 1 15 3 3 6 0 0 0 - 25001 - 0 0 - - 0\n"
    "3 be.web 2 b 127.0.0.3 2 8 0 0 1 15 3 3 6 0 0 0 - 25002 - 0 0 - - 0"
)
SHOW_MAP = "0x7f45c804fe10 1.0.0 pin0.web\n0x7f45c804fe90 1.1.0 pin1.web"
SHOW_PROC = (
    "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
    "11404           master          1 [failed: 0]   0d00h00m02s     2.6.12-1+deb12u4\n"
    "# workers\n"
    "11432           worker          0               0d00h00m01s     2.6.12-1+deb12u4\n"
    "# old workers\n"
    "11300           worker          1               0d00h00m09s     2.6.12-1+deb12u4\n"
    "# programs\n\n"
)
PROMPT_RAW = (
    "\n> \n> No such server.\n\n> 5 (initial 100)\n\n"
    "> Unknown map identifier. Please use #<id> or <file>.\n\n> "
)
PROMPT_COMMANDS = [
    "set server be.web/a weight 5",
    "set server be.web/zz weight 1",
    "get weight be.web/a",
    "show map /nope",
]
